"""The worker against the bundled Tansu broker (and Apache Kafka when
FRESHRAG_TEST_KAFKA_BOOTSTRAP names one) and a real Qdrant Edge shard."""

import json
import threading
import time

import pytest

from ingest.consumer import IngestWorker
from retrieval.search import Principal, Retriever
from tests.conftest import (
    committed,
    delete,
    make_indexer,
    produce,
    publish_events,
    read_topic,
    running_worker,
    upsert,
    wait_for,
)

pytestmark = [pytest.mark.broker, pytest.mark.model]


@pytest.fixture
def settings(kafka_settings):
    """Every test here runs on each broker of the `kafka` fixture (tests/conftest.py)."""
    return kafka_settings


READER = Principal("t", "default", ("public",))


def searchable(retriever, text, query=None):
    hits = retriever.retrieve(READER, query or text, 10, "sparse")
    return any(text in h.payload["text"] for h in hits)


def test_publish_edit_delete_flow(settings, edge_index, dense, sparse):
    retriever = Retriever(edge_index, dense, sparse)
    with running_worker(settings, make_indexer(edge_index, dense, sparse)):
        publish_events(
            settings, [upsert("guide", "# Guide\n\nThe frobnicator needs calibration weekly.", 1)]
        )
        wait_for(lambda: searchable(retriever, "frobnicator needs calibration"))
        publish_events(
            settings, [upsert("guide", "# Guide\n\nThe frobnicator needs calibration monthly.", 2)]
        )
        wait_for(lambda: searchable(retriever, "calibration monthly"))
        assert not searchable(retriever, "calibration weekly")
        publish_events(settings, [delete("guide", 3)])
        wait_for(lambda: (s := edge_index.get_document("default", "guide")) and s.deleted)
        assert not searchable(retriever, "frobnicator")


def test_bad_input_goes_to_the_dlq_and_the_worker_keeps_going(settings, edge_index, dense, sparse):
    retriever = Retriever(edge_index, dense, sparse)
    bad = [
        (b"k1", b"{this is not json"),
        (b"k2", json.dumps({"op": "rename", "doc_id": "x", "version": 1, "content": "c"}).encode()),
        (b"k3", json.dumps({"op": "upsert", "version": 1, "content": "c"}).encode()),
        (
            b"k4",
            json.dumps(
                {
                    "op": "upsert",
                    "doc_id": "img",
                    "version": 1,
                    "mime": "image/png",
                    "content": "png",
                }
            ).encode(),
        ),
    ]
    with running_worker(settings, make_indexer(edge_index, dense, sparse)) as (worker, _):
        produce(settings, bad)
        publish_events(
            settings, [upsert("ok", "# Fine\n\nThis quokka document is perfectly fine.", 1)]
        )
        wait_for(lambda: searchable(retriever, "quokka document"))
        dead = read_topic(settings, settings.dlq_topic, expected=4)
    assert len(dead) == 4
    reasons = {r.key: json.loads(r.value) for r in dead}
    assert (
        "not JSON" in reasons[b"k1"]["reason"] and reasons[b"k1"]["payload"] == "{this is not json"
    )
    assert "op" in reasons[b"k2"]["reason"]
    assert "doc_id" in reasons[b"k3"]["reason"]
    assert "unsupported mime type 'image/png'" in reasons[b"k4"]["reason"]
    assert reasons[b"k4"]["stage"] == "parse" and reasons[b"k4"]["offset"] >= 0
    assert all(dict(r.headers)["freshrag-reason"] for r in dead)


class FlakyIndex:
    """Fault injection around the real index: the first `failures` writes raise."""

    def __init__(self, inner, failures):
        self.inner, self.failures, self.calls = inner, failures, 0
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_document(self, state):
        self.calls += 1
        if self.calls <= self.failures:
            self.gate.set()
            raise ConnectionError("qdrant unavailable (injected)")
        return self.inner.put_document(state)


def test_transient_index_errors_retry_and_commit_only_after_success(
    settings, edge_index, dense, sparse
):
    flaky = FlakyIndex(edge_index, failures=3)
    retriever = Retriever(edge_index, dense, sparse)
    with running_worker(settings, make_indexer(flaky, dense, sparse)):
        publish_events(settings, [upsert("r", "# R\n\nThe wombat retry document arrives.", 1)])
        flaky.gate.wait(60)
        assert committed(settings) == 0, "nothing committed while failing"
        wait_for(lambda: searchable(retriever, "wombat retry document"))
        wait_for(lambda: committed(settings) == 1)
    assert flaky.calls == 4


def test_same_batch_collapses_to_newest_and_replay_is_idempotent(
    settings, edge_index, dense, sparse
):
    retriever = Retriever(edge_index, dense, sparse)
    events = [upsert("c", f"# C\n\nRevision number{v} of the capybara page.", v) for v in (1, 3, 2)]
    publish_events(settings, events)  # all in one partition, before the worker polls: one batch
    with running_worker(settings, make_indexer(edge_index, dense, sparse)) as (_, rec):
        wait_for(lambda: edge_index.get_document("default", "c"))
        wait_for(lambda: rec.statuses("c"))
        assert edge_index.get_document("default", "c").version == 3
        assert searchable(retriever, "number3", "capybara number3")
        assert rec.statuses("c") == ["indexed"], "older events in the batch never reached the index"
        before = dense.texts_encoded
        publish_events(settings, [events[1]])  # replay of v3
        wait_for(lambda: len(rec.statuses("c")) == 2)
        assert rec.statuses("c")[-1] == "stale" and dense.texts_encoded == before


def test_two_workers_share_partitions_and_index_everything_once(
    settings, tmp_path, edge_index, dense, sparse
):
    indexer = make_indexer(edge_index, dense, sparse)
    docs = [
        upsert(f"doc-{i}", f"# Doc {i}\n\nUnique marker token{i} lives here.", 1) for i in range(40)
    ]
    with (
        running_worker(settings, indexer, "w1") as (w1, r1),
        running_worker(settings, indexer, "w2") as (w2, r2),
    ):
        wait_for(lambda: w1.consumer.assignment() and w2.consumer.assignment(), timeout=60)
        a1, a2 = w1.consumer.assignment(), w2.consumer.assignment()
        assert a1 and a2 and not (a1 & a2), "each partition belongs to one worker"
        publish_events(settings, docs)
        wait_for(
            lambda: all(edge_index.get_document("default", d.doc_id) for d in docs), timeout=90
        )
    handled = [o.event.doc_id for o in r1.outcomes + r2.outcomes if o.status == "indexed"]
    assert sorted(handled) == sorted(d.doc_id for d in docs), "every document indexed exactly once"
    assert r1.outcomes and r2.outcomes, "both workers did part of the work"


def test_stop_finishes_the_batch_in_hand_and_commits(settings, edge_index, dense, sparse):
    worker = IngestWorker(settings, make_indexer(edge_index, dense, sparse), client_id="solo")
    publish_events(
        settings, [upsert(f"s{i}", f"# S{i}\n\nStopping test body {i}.", 1) for i in range(5)]
    )
    handled = 0
    for _ in range(200):
        handled += worker.run_once()
        if handled:
            break
    worker.stop()  # what SIGTERM does: the loop sees it after the batch in hand
    worker.close()
    assert handled >= 1
    assert committed(settings) == handled


class SlowIndex:
    """The real index, with one write slower than the group's max_poll_interval (3 s here)."""

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_document(self, state):
        time.sleep(self.delay)
        self.delay = 0
        return self.inner.put_document(state)


def test_a_batch_longer_than_max_poll_interval_keeps_the_partition(
    settings, edge_index, dense, sparse
):
    with running_worker(settings, make_indexer(SlowIndex(edge_index, 6.0), dense, sparse)) as (
        _,
        rec,
    ):
        publish_events(settings, [upsert("slow", "# Slow\n\nA very slow sloth document.", 1)])
        wait_for(lambda: committed(settings) == 1, timeout=60)
        time.sleep(1)
    assert rec.statuses("slow") == ["indexed"], "no eviction, so no redelivery"


def test_a_live_edit_is_not_delayed_by_a_backfill(settings, edge_index, dense, sparse):
    """Backfill events wait while live ones are applied; a live edit overtakes the backlog."""
    paragraphs = "\n\n".join(
        f"## Part {k}\n\nBackfill paragraph {k} about the tapir archive, volume {k}."
        for k in range(12)
    )
    backlog = [
        upsert(f"bulk-{i}", f"# Bulk {i}\n\n{paragraphs}\n\nbulkmarker{i}", 1) for i in range(40)
    ]
    produce(
        settings,
        [(e.key(), e.to_bytes()) for e in backlog],
        topic=settings.backfill_topic,
    )
    with running_worker(settings, make_indexer(edge_index, dense, sparse)) as (worker, rec):
        wait_for(lambda: len(rec.outcomes) >= 2, timeout=60)
        publish_events(
            settings, [upsert("live", "# Live\n\nThe live okapi edit jumps the queue.", 1)]
        )
        wait_for(lambda: edge_index.get_document("default", "live"), timeout=30)
        done_before_live = sum(
            1 for e in backlog if edge_index.get_document("default", e.doc_id) is not None
        )
        assert done_before_live < len(backlog) - 10, "the live edit waited for the backfill"
        wait_for(
            lambda: all(edge_index.get_document("default", e.doc_id) for e in backlog), timeout=120
        )
        wait_for(lambda: committed(settings) == 1)
        assert worker.status()["lag"] is not None
    handled = [o.event.doc_id for o in rec.outcomes if o.status == "indexed"]
    assert sorted(handled) == sorted([e.doc_id for e in backlog] + ["live"]), "each once"


def test_lag_gauge_is_per_consumer_group_and_removed_when_the_worker_stops(
    settings, edge_index, dense, sparse
):
    """Two index generations run two groups' workers in one process: each has its own
    series, and a stopped worker (a dropped generation) leaves none behind."""
    from ingest import metrics

    def series() -> dict[tuple[str, str], float]:
        return {
            (s.labels["topic"], s.labels["partition"]): s.value
            for m in metrics.LAG.collect()
            for s in m.samples
            if s.labels.get("group") == settings.consumer_group
        }

    with running_worker(settings, make_indexer(edge_index, dense, sparse)):
        publish_events(settings, [upsert("lagged", "# Lagged\n\nThe wombat counts events.", 1)])
        wait_for(lambda: edge_index.get_document("default", "lagged"), timeout=30)
        wait_for(lambda: series() and all(v == 0 for v in series().values()), timeout=30)
        assert {topic for topic, _ in series()} <= {settings.topic, settings.backfill_topic}
    assert series() == {}
