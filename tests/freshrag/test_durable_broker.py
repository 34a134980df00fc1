"""The embedded broker on disk: kill -9 of the whole `freshrag up` stack (API and worker,
its children, Tansu and the S3 server under it) in the middle of a stream, then a restart,
loses no event a producer saw acknowledged and no dead letter."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from ingest.events import DocumentEvent
from tests.conftest import free_port

READ, PUBLISH = "durable-read", "durable-publish"
KEYS = {
    READ: {"tenant": "default", "groups": ["public"]},
    PUBLISH: {"tenant": "default", "groups": ["public"], "publish": True},
}


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, whatever session it put itself in (Tansu and the S3
    server start their own, so a process-group kill would miss them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Up:
    """`freshrag up --no-sample` on the given ports and data dir."""

    def __init__(self, data_dir: Path, port: int, kafka: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = data_dir.parent / "up.log"
        env = dict(
            os.environ,
            FRESHRAG_DATA_DIR=str(data_dir),
            FRESHRAG_PORT=str(port),
            FRESHRAG_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka}",
            FRESHRAG_API_KEYS=json.dumps(KEYS),
        )
        env.pop("FRESHRAG_EMBEDDED_BROKER_STORAGE", None)  # the default: on disk
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "freshrag"), "up", "--no-sample"],
            env=env,
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                pytest.fail(f"freshrag up exited:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.kill9()
        pytest.fail(f"freshrag up not ready:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        pids = [self.proc.pid, *_descendants(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)
        for pid in pids:  # the grandchildren, reaped by init
            while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
                time.sleep(0.05)

    def stop(self) -> None:
        below = _descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        finally:
            for pid in [self.proc.pid, *below]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


class Stream:
    """Publishes valid upserts and malformed payloads over the Kafka protocol (acks=all)
    and over POST /documents, and records what was acknowledged."""

    def __init__(self, bootstrap: str, url: str, topic: str = "documents") -> None:
        self.bootstrap, self.url, self.topic = bootstrap, url, topic
        self.acked_docs: set[str] = set()
        self.acked_bad: set[int] = set()
        self.attempted = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _ok(self, kind: str, marker):  # noqa: ANN001, ANN202
        def done(_metadata) -> None:  # noqa: ANN001
            with self._lock:
                (self.acked_docs if kind == "doc" else self.acked_bad).add(marker)

        return done

    def _run(self) -> None:
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            # Not idempotent: Tansu records an idempotent batch's sequence number before its
            # data, so a retry after a crash in between is answered "duplicate", which the
            # client takes as success; without it the retry writes the batch again.
            enable_idempotence=False,
            linger_ms=5,
            max_block_ms=2000,
            request_timeout_ms=3000,
        )
        http = httpx.Client(headers={"Authorization": f"Bearer {PUBLISH}"}, timeout=5)
        i = 0
        try:
            while not self.stop.is_set():
                i += 1
                self.attempted = i
                if i % 5 == 0:  # not JSON: the worker dead-letters it
                    fut = producer.send(self.topic, key=b"bad", value=b'{"bad": %d' % i)
                    fut.add_callback(self._ok("bad", i))
                    continue
                event = DocumentEvent(
                    op="upsert",
                    doc_id=f"d{i}",
                    version=1,
                    content=f"Document {i} is about durable brokers and acknowledged events.",
                )
                if i % 7 == 0:  # through the API, which answers once the broker confirmed
                    try:
                        r = http.post(f"{self.url}/documents", json=json.loads(event.to_bytes()))
                    except httpx.HTTPError:
                        continue
                    if r.status_code in (200, 201, 202):
                        with self._lock:
                            self.acked_docs.add(event.doc_id)
                    continue
                fut = producer.send(self.topic, key=event.key(), value=event.to_bytes())
                fut.add_callback(self._ok("doc", event.doc_id))
                time.sleep(0.005)
        except Exception:  # the broker died under it: what it acknowledged is recorded
            pass
        finally:
            with contextlib.suppress(Exception):
                producer.close(timeout=5)
            http.close()


def _dead_letters(bootstrap: str, topic: str = "documents.dlq") -> list[dict]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: list[dict] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, "the dead-letter topic did not read to its end"
            for records in consumer.poll(1000).values():
                out.extend(json.loads(r.value) for r in records)
        return out
    finally:
        consumer.close()


def _bad_markers(letters: list[dict]) -> set[int]:
    return {
        int(d["payload"].split(":")[1]) for d in letters if d.get("payload", "")[:6] == '{"bad"'
    }


@pytest.mark.broker
@pytest.mark.model
@pytest.mark.slow
# The stream's producer outlives its broker on purpose: its last batches never get an answer.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_9_of_the_embedded_stack_loses_nothing_acknowledged(tmp_path):
    data, port, kafka = tmp_path / "data", free_port(), free_port()
    bootstrap = f"127.0.0.1:{kafka}"
    up = Up(data, port, kafka)
    stream = Stream(bootstrap, up.url)
    try:
        stream.thread.start()
        # Mid-stream: a few hundred events acknowledged, some already dead-lettered.
        deadline = time.monotonic() + 180
        while len(stream.acked_docs) < 250 or not _bad_markers(_dead_letters(bootstrap)):
            assert time.monotonic() < deadline, "the stream did not get going"
            time.sleep(0.5)
        letters_before = _bad_markers(_dead_letters(bootstrap))
        up.kill9()
        stream.stop.set()
        stream.thread.join(60)
        assert (data / "broker").is_dir()

        up = Up(data, port, kafka)
        ready = httpx.get(f"{up.url}/readyz", timeout=5).text
        assert "broker_state_lost" not in ready, ready

        # Every acknowledged upsert is indexed (from the broker's log, not a producer retry).
        reader = httpx.Client(headers={"Authorization": f"Bearer {READ}"}, timeout=10)
        missing = set(stream.acked_docs)
        deadline = time.monotonic() + 400
        while missing and time.monotonic() < deadline:
            missing = {
                d for d in missing if reader.get(f"{up.url}/documents/{d}").status_code != 200
            }
            if missing:
                time.sleep(1)
        assert not missing, f"{len(missing)} of {len(stream.acked_docs)} acknowledged lost"

        # Every acknowledged malformed payload is on the dead-letter topic, and the dead
        # letters written before the kill are still there.
        deadline = time.monotonic() + 120
        while True:
            letters = _bad_markers(_dead_letters(bootstrap))
            if stream.acked_bad <= letters or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert letters_before <= letters
        assert stream.acked_bad <= letters, sorted(stream.acked_bad - letters)[:10]
        assert len(stream.acked_docs) >= 250 and len(letters_before) >= 1
        print(
            f"acknowledged: {len(stream.acked_docs)} upserts, {len(stream.acked_bad)} malformed "
            f"({len(letters_before)} dead-lettered before the kill); all indexed or dead-lettered"
        )
    finally:
        stream.stop.set()
        up.stop()
