"""What an attacker or a careless producer sends, against the real Tansu broker and Qdrant Edge.

Each test here failed on the version before: host files indexed, poison events stalling
their partition, big dead letters lost, loose versions accepted, tombstones leaking.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import KeyStore
from freshrag.runtime import Core, EmbeddedBroker
from ingest import metrics
from ingest.broker import ensure_topics
from ingest.chunker import Chunker
from ingest.consumer import IngestWorker
from ingest.events import DocumentEvent
from ingest.indexer import Indexer
from ingest.processing import InlineProcessor
from ingest.publisher import build_events
from ingest.sources import SourcePolicy
from retrieval.search import Principal, Retriever
from tests.conftest import (
    committed,
    delete,
    free_port,
    make_indexer,
    make_settings,
    produce,
    publish_events,
    read_topic,
    running_worker,
    upsert,
    wait_for,
)
from tests.documents import make_pdf

pytestmark = pytest.mark.model

READER = Principal("t", "default", ("public",))


def searchable(retriever: Retriever, text: str, who: Principal = READER) -> bool:
    return any(text in h.payload["text"] for h in retriever.retrieve(who, text, 10, "sparse"))


def raw(**fields) -> bytes:  # noqa: ANN003
    return json.dumps(fields).encode()


# --- 1. no event reads the host ---------------------------------------------------------


@pytest.mark.broker
def test_file_sources_outside_the_allow_list_are_dead_lettered(
    settings, tmp_path, edge_index, dense, sparse
):
    allowed = tmp_path / "shared"
    allowed.mkdir()
    (allowed / "ok.md").write_text("# Ok\n\nThe pangolin handbook lives in the shared folder.")
    secret = tmp_path / "api_keys.json"
    secret.write_text('{"frk_secret_marker": {"tenant": "default"}}')
    (allowed / "link.md").symlink_to(secret)
    indexer = Indexer(
        edge_index,
        InlineProcessor(Chunker(128, 0), dense),
        sparse,
        sources=SourcePolicy([allowed]),
    )
    attacks = {
        "environ": "file:///proc/self/environ",
        "keys": secret.as_uri(),
        "dotdot": (allowed.as_uri() + "/../api_keys.json"),
        "symlink": (allowed / "link.md").as_uri(),
        "remote": "file://evil.example.com/etc/passwd",
        "http": "http://169.254.169.254/latest/meta-data/",
    }
    events = [
        raw(op="upsert", doc_id=d, version=1, acl=["public"], mime="text/plain", source=src)
        for d, src in attacks.items()
    ]
    retriever = Retriever(edge_index, dense, sparse)
    with running_worker(settings, indexer):
        produce(settings, [(d.encode(), e) for d, e in zip(attacks, events, strict=True)])
        publish_events(
            settings,
            [
                DocumentEvent(
                    op="upsert",
                    doc_id="ok",
                    version=1,
                    mime="text/markdown",
                    source=(allowed / "ok.md").as_uri(),
                )
            ],
        )
        dead = read_topic(settings, settings.dlq_topic, expected=len(attacks))
        wait_for(lambda: searchable(retriever, "pangolin handbook"))
    reasons = {r.key.decode(): json.loads(r.value)["reason"] for r in dead}
    assert set(reasons) == set(attacks)
    assert all("refused" in reasons[d] or "only file://" in reasons[d] for d in attacks), reasons
    assert "outside the allowed folders" in reasons["dotdot"]
    assert "outside the allowed folders" in reasons["symlink"]
    for d in attacks:
        assert edge_index.get_document("default", d) is None
    assert not searchable(retriever, "frk_secret_marker")


def test_with_no_roots_configured_no_file_is_ever_read(tmp_path, edge_index, dense, sparse):
    f = tmp_path / "notes.md"
    f.write_text("# Notes\n\nNothing to see.")
    [out] = make_indexer(edge_index, dense, sparse).apply(
        [DocumentEvent(op="upsert", doc_id="n", version=1, source=f.as_uri())]
    )
    assert out.status == "failed" and "FRESHRAG_SOURCE_ROOTS is empty" in out.reason


@pytest.mark.broker
def test_a_pdf_travels_inside_the_event(settings, tmp_path, edge_index, dense, sparse):
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_pdf(["Quarterly okapi census for the vector search team."]))
    [event] = build_events([pdf], root=tmp_path)
    assert event.content_base64 and base64.b64decode(event.content_base64) == pdf.read_bytes()
    pdf.unlink()  # the worker must not need the file
    retriever = Retriever(edge_index, dense, sparse)
    with running_worker(settings, make_indexer(edge_index, dense, sparse)):
        publish_events(settings, [event])
        wait_for(lambda: searchable(retriever, "okapi census"))


# --- 2. one poison event cannot stall its partition ----------------------------------


class ExplodingChunker(Chunker):
    def chunk(self, elements):  # noqa: ANN001, ANN201
        if any("EXPLODE" in e.text for e in elements):
            raise IndexError("list index out of range (injected chunker bug)")
        return super().chunk(elements)


class PoisonIndex:
    """The real index, healthy, except that writing one document always fails."""

    def __init__(self, inner, poison: str) -> None:  # noqa: ANN001
        self.inner, self.poison, self.attempts = inner, poison, 0

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self.inner, name)

    def upsert_chunks(self, points) -> None:  # noqa: ANN001
        if any(p.payload["doc_id"] == self.poison for p in points):
            self.attempts += 1
            raise ValueError("payload rejected by the index (injected)")
        self.inner.upsert_chunks(points)


@pytest.mark.broker
def test_poison_events_end_in_the_dlq_and_the_partition_moves_on(
    settings, edge_index, dense, sparse
):
    settings = settings.model_copy(update={"document_retries": 2})
    poison = PoisonIndex(edge_index, "poison")
    indexer = Indexer(poison, InlineProcessor(ExplodingChunker(128, 0), dense), sparse)
    retriever = Retriever(edge_index, dense, sparse)
    huge_failure = raw(
        op="upsert", doc_id="huge", version=1, mime="image/png", content="x" * 3_000_000
    )
    with running_worker(settings, indexer):
        publish_events(
            settings,
            [
                upsert("chunker", "# Boom\n\nThis text will EXPLODE the chunker.", 1),
                upsert("poison", "# Poison\n\nThe index refuses this narwhal page.", 1),
                upsert("fine", "# Fine\n\nThe axolotl page is perfectly fine.", 1),
            ],
        )
        produce(settings, [(b"huge", huge_failure)])
        publish_events(settings, [upsert("after", "# After\n\nThe quokka came later.", 1)])
        wait_for(lambda: searchable(retriever, "quokka came later"), timeout=90)
        dead = read_topic(settings, settings.dlq_topic, expected=3)
        wait_for(lambda: committed(settings) == 5, timeout=30)
    letters = {r.key.decode(): json.loads(r.value) for r in dead}
    assert set(letters) == {"chunker", "poison", "huge"}
    assert "injected chunker bug" in letters["chunker"]["reason"]
    assert letters["poison"]["stage"] == "write" and "3 tries" in letters["poison"]["reason"]
    assert letters["huge"]["payload_bytes"] > 3_000_000, "a 3 MB event is dead-lettered too"
    assert searchable(retriever, "axolotl page")
    assert poison.attempts >= 3


class DownIndex:
    """An index that is down (health check fails) for the first `outage_s` seconds."""

    def __init__(self, inner, outage_s: float) -> None:  # noqa: ANN001
        self.inner, self.until = inner, time.monotonic() + outage_s
        self.failures = 0

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self.inner, name)

    def _down(self) -> bool:
        return time.monotonic() < self.until

    def ping(self) -> bool:
        return not self._down() and self.inner.ping()

    def put_document(self, state) -> None:  # noqa: ANN001
        if self._down():
            self.failures += 1
            raise ConnectionError("qdrant unavailable (injected)")
        self.inner.put_document(state)


@pytest.mark.broker
def test_an_index_outage_retries_the_batch_and_dead_letters_nothing(
    settings, edge_index, dense, sparse
):
    settings = settings.model_copy(update={"document_retries": 1})
    down = DownIndex(edge_index, outage_s=4.0)
    retriever = Retriever(edge_index, dense, sparse)
    with running_worker(settings, make_indexer(down, dense, sparse)):
        publish_events(settings, [upsert("o", "# O\n\nThe outage okapi waits patiently.", 1)])
        wait_for(lambda: down.failures >= 3, timeout=30)
        assert committed(settings) == 0
        wait_for(lambda: searchable(retriever, "outage okapi"), timeout=60)
        wait_for(lambda: committed(settings) == 1)
    assert read_topic(settings, settings.dlq_topic, expected=1, timeout=3) == []


@pytest.mark.broker
def test_metrics_count_each_event_once_whatever_the_retries(settings, edge_index, dense, sparse):
    class FailTwice:
        def __init__(self, inner):  # noqa: ANN001
            self.inner, self.left = inner, 2

        def __getattr__(self, name):  # noqa: ANN001, ANN204
            return getattr(self.inner, name)

        def put_document(self, state) -> None:  # noqa: ANN001
            if state.doc_id == "m2" and self.left:
                self.left -= 1
                raise ConnectionError("blip (injected)")
            self.inner.put_document(state)

    before = metrics.EVENTS.labels("indexed")._value.get()
    with running_worker(settings, make_indexer(FailTwice(edge_index), dense, sparse)):
        publish_events(
            settings,
            [upsert("m1", "# M1\n\nFirst metric page.", 1), upsert("m2", "# M2\n\nSecond.", 1)],
        )
        wait_for(lambda: committed(settings) == 2, timeout=60)
    assert metrics.EVENTS.labels("indexed")._value.get() - before == 2


# --- 6. the event contract is as strict as its schema -----------------------------------


@pytest.mark.broker
def test_loose_versions_and_control_characters_are_dead_lettered(
    settings, edge_index, dense, sparse
):
    bad = {
        "v-true": raw(op="upsert", doc_id="v-true", version=True, content="x"),
        "v-str": raw(op="upsert", doc_id="v-str", version="7", content="x"),
        "v-float": raw(op="upsert", doc_id="v-float", version=7.0, content="x"),
        "v-big": raw(op="upsert", doc_id="v-big", version=2**64, content="x"),
        "nul": raw(op="upsert", doc_id="a\x00b", version=1, content="x"),
        "tenant-nul": raw(op="upsert", doc_id="t", tenant="acme\x00x", version=1, content="x"),
        "surrogate": b'{"op":"upsert","doc_id":"s","version":1,"content":"\\ud800"}',
        "nan": b'{"op":"upsert","doc_id":"n","version":1,"content":"x","metadata":{"a":NaN}}',
    }
    with running_worker(settings, make_indexer(edge_index, dense, sparse)):
        produce(settings, [(k.encode(), v) for k, v in bad.items()])
        dead = read_topic(settings, settings.dlq_topic, expected=len(bad))
    assert {r.key.decode() for r in dead} == set(bad)
    reasons = {r.key.decode(): json.loads(r.value)["reason"] for r in dead}
    assert all("version" in reasons[k] for k in ("v-true", "v-str", "v-float", "v-big"))
    assert "control characters" in reasons["nul"] and "tenant" in reasons["tenant-nul"]
    assert "surrogate" in reasons["surrogate"] and "NaN" in reasons["nan"]


@pytest.mark.broker
def test_equal_versions_resolve_the_same_in_one_batch_or_across_batches(
    settings, tmp_path, dense, sparse
):
    from tests.conftest import open_backend

    first = upsert("eq", "# Eq\n\nThe first wombat edition.", 5)
    second = upsert("eq", "# Eq\n\nThe second wombat edition.", 5)
    results = []
    for split in (False, True):
        index = open_backend("edge", tmp_path / f"split-{split}", dense.dim)
        indexer = make_indexer(index, dense, sparse)
        if split:
            indexer.apply([first])
            indexer.apply([second])
        else:
            from ingest.changes import newest_per_document

            indexer.apply([e for e, _ in newest_per_document([(first, 0), (second, 1)])])
        hits = Retriever(index, dense, sparse).retrieve(READER, "wombat edition", 5, "sparse")
        results.append({h.payload["text"] for h in hits})
        index.close()
    assert results[0] == results[1] and any("first wombat" in t for t in results[0])


# --- 7. a tombstone reveals nothing to those who could never read the document ----------


def test_a_delete_without_acl_keeps_the_deleted_documents_readers(edge_index, dense, sparse):
    indexer = make_indexer(edge_index, dense, sparse)
    indexer.apply([upsert("secret", "# Eng\n\nOnly engineers read this.", 1, acl=["eng"])])
    indexer.apply([delete("secret", 102)])
    state = edge_index.get_document("default", "secret")
    assert state.deleted and state.acl == ["eng"], "not ['public']: public never could read it"
    indexer.apply([delete("never-existed", 1)])
    assert edge_index.get_document("default", "never-existed").acl == []


# --- 9. a broker that forgot everything is reported, not ignored ------------------------


@pytest.mark.broker
def test_a_broker_restart_that_lost_offsets_is_reported(tmp_path, edge_index, dense, sparse):
    port = free_port()
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "b1.log").start()
    settings = make_settings(tmp_path, broker.bootstrap, topic_partitions=1)
    try:
        ensure_topics(settings)
        with running_worker(settings, make_indexer(edge_index, dense, sparse)):
            publish_events(
                settings, [upsert(f"l{i}", f"# L{i}\n\nLedger page {i}.", 1) for i in range(3)]
            )
            wait_for(lambda: committed(settings) == 3, timeout=60)
        wait_for(lambda: (settings.data_dir / "ingest").exists())
    finally:
        broker.stop()
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "b2.log").start()
    try:
        ensure_topics(settings)
        core = Core(
            settings.model_copy(update={"ingest_process": False}), edge_index, dense, sparse
        )
        worker = core.worker(client_id="after")
        try:
            message = worker.check_broker_state()
        finally:
            worker.close()
        assert message and "lost" in message and "committed offset 3" in message
        assert metrics.BROKER_STATE_LOST._value.get() == 1
        with TestClient(create_app(core.services(KeyStore(settings.api_keys)))) as client:
            r = client.get("/readyz")
        # This worker never ran: not warm, so not ready; the details still say why.
        assert r.status_code == 503 and r.json()["detail"]["checks"]["ingest"] is False
        ready = r.json()["detail"]
        assert ready["details"]["ingest"]["broker_state_lost"] == message
        assert ready["details"]["ingest"]["documents"] == 3, "index state for the report"
        assert ready["details"]["ingest"]["chunks"] >= 3
        again = IngestWorker(settings, make_indexer(edge_index, dense, sparse), client_id="again")
        try:
            assert again.check_broker_state() is None, "reported once, then recording afresh"
        finally:
            again.close()
    finally:
        broker.stop()
