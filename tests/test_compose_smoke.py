"""docker-compose.yml started for real: up, publish over the API, retrieve, scale the workers
to three, SIGKILL one mid-stream, and every event the API acknowledged is indexed.

Opt-in with FRESHRAG_TEST_COMPOSE=1: it builds the image, starts Apache Kafka, a Qdrant
server, the API and the workers, and binds ports 8000, 9092 and 6333. Set on a machine
without Docker or its compose plugin, it fails rather than skips.
.github/workflows/servers.yml runs it. It imports no project code, so it also runs with
`pytest --noconftest` beside only pytest, pytest-timeout and httpx.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.compose, pytest.mark.slow]

ENV = "FRESHRAG_TEST_COMPOSE"
ROOT = Path(__file__).resolve().parents[1]
API = "http://127.0.0.1:8000"
KEY = "compose-smoke-key"
# What docker-compose.yml leaves at its default or sets: the group of generation g1, the
# events topic, FRESHRAG_TOPIC_PARTITIONS.
GROUP, TOPIC, PARTITIONS = "freshrag-ingest", "documents", 12


class Compose:
    """`docker compose` on one project (its own name, so it touches no other stack)."""

    def __init__(self, project: str, files: list[Path]) -> None:
        self.base = ["docker", "compose", "-p", project]
        for f in files:
            self.base += ["-f", str(f)]

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        run = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
        if check and run.returncode:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {run.returncode}:\n"
                f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
            )
        return run.stdout

    def kafka(self, script: str, *args: str) -> str:
        """One of Kafka's own tools, run in its container."""
        tool = f"/opt/kafka/bin/{script}"
        return self("exec", "-T", "kafka", tool, "--bootstrap-server", "localhost:9092", *args)

    def workers(self) -> list[str]:
        """The running worker containers."""
        return self("ps", "--quiet", "worker").split()

    def members(self) -> dict[str, int]:
        """The consumer group's members and how many partitions each holds (none while it
        rebalances)."""
        out = self.kafka("kafka-consumer-groups.sh", "--describe", "--group", GROUP, "--members")
        rows = [line.split() for line in out.splitlines()]
        return {r[1]: int(r[-1]) for r in rows if len(r) >= 5 and r[0] == GROUP}

    @contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            print(self("logs", "--no-color", "--tail", "150", check=False, timeout=120))
            raise


def _require_docker() -> None:
    if shutil.which("docker") is None:
        pytest.fail(f"{ENV} is set but there is no `docker` command", pytrace=False)
    for args, what in ((["compose", "version"], "compose plugin"), (["info"], "daemon")):
        run = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
        if run.returncode:
            pytest.fail(
                f"{ENV} is set but Docker's {what} is missing: {run.stderr.strip()[:400]}",
                pytrace=False,
            )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    if not os.environ.get(ENV, "").strip():
        pytest.skip(
            f"{ENV} is not set: the compose smoke test builds and starts docker-compose.yml "
            "(Docker with compose, ports 8000, 9092 and 6333 free)"
        )
    _require_docker()
    tmp = tmp_path_factory.mktemp("compose")
    keys = tmp / "keys"
    keys.mkdir()
    grant = {"tenant": "smoke", "groups": ["eng"], "publish": True}
    (keys / "api_keys.json").write_text(json.dumps({KEY: grant}))
    # Compose merges a service's volumes by their path in the container: this one replaces
    # ./keys, so the test writes no file into the checkout. (JSON is YAML.)
    override = tmp / "compose.keys.yml"
    override.write_text(json.dumps({"services": {"api": {"volumes": [f"{keys}:/keys:ro"]}}}))
    compose = Compose(
        f"freshrag-smoke-{uuid.uuid4().hex[:8]}", [ROOT / "docker-compose.yml", override]
    )
    try:
        with compose.logs_on_failure():
            compose("up", "--detach", "--build", "--wait", "--wait-timeout", "900", timeout=2400)
        yield compose
    finally:
        compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)


def wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, AssertionError):
            pass  # not up yet, or a tool that failed mid-rebalance: ask again
        time.sleep(1)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


class Corpus:
    """The documents published, each at its last acknowledged version."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api
        self.versions: dict[str, int] = {}

    @staticmethod
    def token(doc_id: str, version: int) -> str:
        return f"smoketoken{doc_id.replace('-', '')}v{version}"

    def publish(self, doc_ids: list[str]) -> None:
        events = []
        for d in doc_ids:
            v = self.versions.get(d, 0) + 1
            body = f"# {d}\n\nThe compose smoke marker {self.token(d, v)} is here.\n"
            events.append(
                {
                    "op": "upsert",
                    "doc_id": d,
                    "version": v,
                    "acl": ["eng"],
                    "mime": "text/markdown",
                    "content": body,
                }
            )
        r = self.api.post("/documents", json=events)
        assert r.status_code == 202, r.text  # acknowledged by Kafka (acks=all)
        assert len(r.json()["records"]) == len(events)
        self.versions.update({e["doc_id"]: e["version"] for e in events})

    def indexed(self, doc_id: str) -> bool:
        v = self.versions[doc_id]
        r = self.api.get(f"/documents/{doc_id}", params={"min_version": v, "wait": 10})
        return r.status_code == 200 and r.json()["version"] == v

    def found(self, doc_id: str) -> bool:
        query = self.token(doc_id, self.versions[doc_id])
        r = self.api.post("/retrieve", json={"query": query, "mode": "sparse", "top_k": 1})
        hits = r.json()["hits"]
        return bool(hits) and hits[0]["doc_id"] == doc_id and query in hits[0]["text"]

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for doc_id in sorted(self.versions):
            wait(lambda d=doc_id: self.indexed(d), deadline - time.monotonic(), f"{doc_id} indexed")


@pytest.mark.timeout(3600)
def test_publish_retrieve_scale_to_three_kill_one_and_nothing_is_lost(stack: Compose) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=API, headers=headers, timeout=60) as api, stack.logs_on_failure():
        wait(lambda: api.get("/readyz").status_code == 200, 300, "the API is ready")
        # The worker creates the topics; an API publishing first would have Kafka make a
        # one-partition topic, and three workers would then have one partition to share.
        wait(
            lambda: (
                f"PartitionCount: {PARTITIONS}"
                in stack.kafka("kafka-topics.sh", "--describe", "--topic", TOPIC)
            ),
            300,
            "the worker created the events topic",
        )
        corpus = Corpus(api)
        first = [f"a-{i}" for i in range(20)]
        corpus.publish(first)
        corpus.wait_all(300)
        assert all(corpus.found(d) for d in first)

        stack("up", "--detach", "--no-recreate", "--scale", "worker=3", "--wait", timeout=900)
        wait(
            lambda: len(m := stack.members()) == 3 and all(m.values()),
            300,
            "three workers share the partitions",
        )

        # A stream of new documents and edits; one worker is killed while it runs, and
        # more arrives after. Its uncommitted events must reach the other two.
        stream = [f"b-{i}" for i in range(60)] + first[:10]
        for k in range(0, len(stream), 10):
            corpus.publish(stream[k : k + 10])
            if k == 20:
                victim = stack.workers()[0]
                subprocess.run(["docker", "kill", "--signal", "KILL", victim], check=True)
        corpus.publish([f"c-{i}" for i in range(20)] + first[10:15])
        assert len(stack.workers()) == 2
        corpus.wait_all(600)
        wait(lambda: len(stack.members()) == 2, 120, "the group settled on the two left")

        assert len(corpus.versions) == 100
        edited = first[:15]
        assert all(corpus.versions[d] == 2 for d in edited)
        missing = [d for d in sorted(corpus.versions) if not corpus.found(d)]
        assert not missing, f"acknowledged but not retrievable: {missing}"
