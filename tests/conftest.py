"""Real components: the bundled Tansu broker, Qdrant Edge in-process, and the server adapter
against qdrant-client's local mode (which implements the Qdrant server API)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Self

import pytest
from kafka import KafkaConsumer, KafkaProducer

from freshrag.runtime import EmbeddedBroker
from freshrag.settings import Settings
from ingest.broker import ensure_topics
from ingest.chunker import Chunker
from ingest.consumer import IngestWorker
from ingest.events import DocumentEvent
from ingest.indexer import Indexer, Outcome
from ingest.processing import InlineProcessor
from retrieval.encoders import DenseEncoder, SparseEncoder
from tests.servers import (
    KAFKA_SERVER,
    QDRANT_SERVER,
    REAL,
    KafkaTarget,
    QdrantTarget,
    kafka_bootstrap,
    qdrant_target,
)

# --- markers: every test says what it needs ---------------------------------------------

NEEDS = ("unit", "broker", "model", "compose")
# A fixture that brings a heavy dependency marks every test using it, directly or through
# other fixtures, so a hand-written marker cannot forget it.
FIXTURE_NEEDS = {"broker": "broker", "kafka": "broker", "dense": "model"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects, so added markers count there
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, mark in FIXTURE_NEEDS.items():
            if fixture in used and item.get_closest_marker(mark) is None:
                item.add_marker(mark)
        callspec = getattr(item, "callspec", None)  # a real-server variant: `-m servers`
        if callspec and REAL & {str(v) for v in callspec.params.values()}:
            item.add_marker("servers")
    unmarked = [i.nodeid for i in items if not any(i.get_closest_marker(m) for m in NEEDS)]
    contradictory = [
        i.nodeid
        for i in items
        if i.get_closest_marker("unit")
        and (i.get_closest_marker("broker") or i.get_closest_marker("model"))
    ]
    problems = []
    if unmarked:
        problems.append(
            "tests without a unit, broker, model or compose marker:\n  " + "\n  ".join(unmarked)
        )
    if contradictory:
        problems.append(
            "tests marked unit that need the broker or the model:\n  " + "\n  ".join(contradictory)
        )
    if problems:
        raise pytest.UsageError("\n".join(problems))


class Loops:
    """Background loops run from `with` until its exit (traffic beside an index change)."""

    def __init__(self, *loops: Callable[[], None], join_s: float = 60.0) -> None:
        self._stop = threading.Event()
        self._join_s = join_s
        self._threads = [threading.Thread(target=f) for f in loops]

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self._join_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.1
) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    b = EmbeddedBroker(port=free_port(), log_path=tmp_path_factory.mktemp("broker") / "tansu.log")
    b.start()
    yield b.bootstrap
    b.stop()


@pytest.fixture(scope="session")
def dense() -> DenseEncoder:
    return DenseEncoder("all-MiniLM-L6-v2", batch_size=32)


@pytest.fixture(scope="session")
def sparse() -> SparseEncoder:
    return SparseEncoder()


def make_settings(tmp_path: Path, bootstrap: str = "127.0.0.1:1", **overrides) -> Settings:  # noqa: ANN003
    tag = uuid.uuid4().hex[:8]
    values = dict(
        data_dir=tmp_path / "data",
        kafka_bootstrap_servers=bootstrap,
        topic=f"documents-{tag}",
        dlq_topic=f"documents-{tag}.dlq",
        backfill_topic=f"documents-{tag}.backfill",
        consumer_group=f"ingest-{tag}",
        topic_partitions=4,
        kafka_session_timeout_ms=3000,
        kafka_max_poll_interval_ms=3000,
        poll_timeout_ms=200,
        api_keys={
            "key-a": {"tenant": "acme", "groups": ["eng"]},
            "key-a-sales": {"tenant": "acme", "groups": ["sales"]},
            "key-b": {"tenant": "globex", "groups": ["eng"]},
        },
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, broker: str) -> Settings:
    s = make_settings(tmp_path, broker)
    ensure_topics(s)
    return s


def open_backend(kind: str, tmp_path: Path, dim: int, qdrant: QdrantTarget | None = None):  # noqa: ANN201
    """`edge`, or the server adapter over `qdrant` (default: qdrant-client's local mode)."""
    if kind == "edge":
        from retrieval.store.edge.adapter import EdgeIndex

        index = EdgeIndex(tmp_path / "edge", "chunks", "documents")
    else:
        from retrieval.store.server import ServerIndex

        qdrant = qdrant or QdrantTarget("local", path=tmp_path / "qdrant-local")
        index = ServerIndex(qdrant.client, qdrant.name("chunks"), qdrant.name("documents"))
    index.ensure_schema(dim)
    return index


@pytest.fixture(params=["edge", "server", QDRANT_SERVER])
def index(request: pytest.FixtureRequest, tmp_path: Path, dense: DenseEncoder):  # noqa: ANN201
    """Qdrant Edge; the server adapter over qdrant-client's local mode (`server`); the same
    adapter over a real Qdrant server (`qdrant-server`, with FRESHRAG_TEST_QDRANT_URL)."""
    edge = request.param == "edge"
    with nullcontext() if edge else qdrant_target(request.param, tmp_path) as qdrant:
        idx = open_backend(request.param, tmp_path, dense.dim, qdrant)
        yield idx
        idx.close()


@pytest.fixture(params=["local", QDRANT_SERVER])
def qdrant(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantTarget]:
    """A Qdrant API: qdrant-client's local mode, and a real server when
    FRESHRAG_TEST_QDRANT_URL names one (`tests/servers.py`)."""
    with qdrant_target(request.param, tmp_path) as target:
        yield target


@pytest.fixture(params=["bundled", KAFKA_SERVER])
def kafka(request: pytest.FixtureRequest) -> Iterator[KafkaTarget]:
    """A broker: the bundled Tansu one, and Apache Kafka when FRESHRAG_TEST_KAFKA_BOOTSTRAP
    names one (`tests/servers.py`)."""
    if request.param == KAFKA_SERVER:
        target = KafkaTarget(KAFKA_SERVER, kafka_bootstrap())
    else:
        target = KafkaTarget("bundled", request.getfixturevalue("broker"))
    yield target
    target.cleanup()


@pytest.fixture
def kafka_settings(tmp_path: Path, kafka: KafkaTarget) -> Settings:
    """`settings` on each broker of the `kafka` fixture, its topics created."""
    return kafka.topics(make_settings(tmp_path, kafka.bootstrap))


@pytest.fixture
def edge_index(tmp_path: Path, dense: DenseEncoder):  # noqa: ANN201
    idx = open_backend("edge", tmp_path, dense.dim)
    yield idx
    idx.close()


def make_indexer(
    index, dense: DenseEncoder, sparse: SparseEncoder, chunk_size: int = 128
) -> Indexer:  # noqa: ANN001
    return Indexer(index, InlineProcessor(Chunker(chunk_size, 0), dense), sparse)


class Recorder:
    """Collects worker outcomes across threads."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def __call__(self, outcomes: list[Outcome]) -> None:
        with self._lock:
            self.outcomes.extend(outcomes)

    def statuses(self, doc_id: str) -> list[str]:
        with self._lock:
            return [o.status for o in self.outcomes if o.event.doc_id == doc_id]


@contextmanager
def running_worker(
    settings: Settings, indexer: Indexer, name: str = "w1"
) -> Iterator[tuple[IngestWorker, Recorder]]:
    recorder = Recorder()
    worker = IngestWorker(settings, indexer, client_id=name, on_batch=recorder)
    thread = threading.Thread(target=worker.run, name=name, daemon=True)
    thread.start()
    try:
        yield worker, recorder
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop"


def produce(
    settings: Settings, items: list[tuple[bytes | None, bytes | None]], topic: str | None = None
) -> None:
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        max_request_size=settings.max_event_bytes,
    )
    for key, value in items:
        producer.send(topic or settings.topic, key=key, value=value)
    producer.flush()
    producer.close()


def publish_events(settings: Settings, events: list[DocumentEvent]) -> None:
    produce(settings, [(e.key(), e.to_bytes()) for e in events])


def committed(settings: Settings, topic: str | None = None) -> int:
    """Sum of the group's committed offsets over the topic's partitions."""
    from kafka.structs import TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    try:
        name = topic or settings.topic
        parts = [TopicPartition(name, p) for p in range(settings.topic_partitions)]
        return sum(c.committed(tp) or 0 for tp in parts)
    finally:
        c.close()


def read_topic(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    records: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def upsert(doc_id: str, content: str, version: int = 1, **kw) -> DocumentEvent:  # noqa: ANN003
    return DocumentEvent(
        op="upsert",
        doc_id=doc_id,
        version=version,
        content=content,
        mime=kw.pop("mime", "text/markdown"),
        **kw,
    )


def delete(doc_id: str, version: int, **kw) -> DocumentEvent:  # noqa: ANN003
    return DocumentEvent(op="delete", doc_id=doc_id, version=version, **kw)


def make_services(settings: Settings, index, dense: DenseEncoder, sparse: SparseEncoder):  # noqa: ANN001, ANN201
    """The API's services over a real index, wired exactly as the service wires them."""
    from api.auth import KeyStore
    from freshrag.runtime import Core

    return Core(settings, index, dense, sparse).services(KeyStore(settings.api_keys))
