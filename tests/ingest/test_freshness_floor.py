"""Freshness under the loads users live in: long documents, shared cores, shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from kafka.structs import TopicPartition

from ingest.chunker import Chunker
from ingest.indexer import Indexer
from ingest.lanes import commit_offsets, take_bulk
from ingest.processing import InlineProcessor
from retrieval.encoders import DenseEncoder
from tests.conftest import committed, free_port, publish_events, running_worker, upsert, wait_for


def rec(topic: str, partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset)


# --- offsets never pass a document still waiting in the bulk lane ----------------------


@pytest.mark.unit
def test_commit_goes_past_what_was_applied_but_never_past_a_held_record():
    live0, live1 = TopicPartition("documents", 0), TopicPartition("documents", 1)
    applied = {live0: 7, live1: 4}
    assert commit_offsets(applied, [], {}) == {live0: 7, live1: 4}
    # A long document at offset 4 of partition 0 waits in the bulk lane: the edits after
    # it are applied, but a crash now must redeliver it, so the commit stays at 4.
    held = [rec("documents", 0, 4)]
    assert commit_offsets(applied, held, {}) == {live0: 4, live1: 4}
    # Records held further on in a partition (a backfill's next events) do not hold it back.
    assert commit_offsets(applied, [rec("documents", 0, 9)], {}) == {live0: 7, live1: 4}
    # Nothing moves backwards, and nothing is re-committed.
    assert commit_offsets(applied, held, {live0: 4, live1: 2}) == {live1: 4}
    # Once the long document is applied, the commit jumps past the edits applied before.
    assert commit_offsets(applied, [], {live0: 4, live1: 4}) == {live0: 7}


@pytest.mark.unit
def test_a_bulk_turn_takes_long_live_documents_before_the_backfill():
    backlog = [rec("backfill", p, o) for o in range(3) for p in range(4)]
    backlog.append(rec("documents", 2, 7))
    taken, left = take_bulk(backlog, 4, "backfill")
    assert taken[0].topic == "documents", "the waiting live document goes first"
    assert [(r.topic, r.partition, r.offset) for r in taken[1:]] == [
        ("backfill", 0, 0),
        ("backfill", 1, 0),
        ("backfill", 2, 0),
    ]
    assert len(left) == len(backlog) - 4


# --- a long live document does not hold small edits behind it ----------------------------


@pytest.mark.broker
@pytest.mark.model
def test_a_long_live_document_goes_to_the_bulk_lane_behind_small_edits(
    tmp_path, broker, edge_index, dense, sparse
):
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, broker, long_document_bytes=2048, topic_partitions=1)
    from ingest.broker import ensure_topics

    ensure_topics(settings)
    written: list[str] = []
    indexer = Indexer(
        edge_index,
        InlineProcessor(Chunker(128, 0), dense),
        sparse,
        on_written=lambda _t, doc_id: written.append(doc_id),
    )
    manual = "# Manual\n\n" + "\n\n".join(
        f"## Part {i}\n\nThe ocelot manual explains calibration step {i} in detail."
        for i in range(80)
    )
    assert len(manual.encode()) > 2048
    events = [upsert("manual", manual, 1)] + [
        upsert(f"edit-{i}", f"# Edit {i}\n\nA one-line fix number {i}.", 1) for i in range(3)
    ]
    with running_worker(settings, indexer) as (worker, _):
        wait_for(lambda: worker.ready.is_set())
        publish_events(settings, events)  # one partition: the manual comes first
        wait_for(lambda: len(written) == 4)
        wait_for(lambda: committed(settings) == 4)
    assert written[:3] == ["edit-0", "edit-1", "edit-2"], written
    assert written[3] == "manual"
    assert edge_index.get_document("default", "manual").chunk_count > 10


@pytest.mark.broker
@pytest.mark.model
def test_a_stream_that_never_pauses_does_not_starve_the_bulk_lane(
    tmp_path, broker, edge_index, dense, sparse
):
    """Bulk work gets a turn every `bulk_turn_s` even while live edits keep coming."""
    from ingest.broker import ensure_topics
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, broker, long_document_bytes=2048, bulk_turn_s=0.2)
    ensure_topics(settings)
    indexer = Indexer(edge_index, InlineProcessor(Chunker(128, 0), dense), sparse)
    indexer.yield_group_chunks = 4  # many turns for one manual
    manual = "# Manual\n\n" + "\n\n".join(
        f"## Part {i}\n\nThe tapir manual explains calibration step {i} in detail."
        for i in range(60)
    )
    stop = threading.Event()

    def stream() -> None:
        version = 1
        while not stop.is_set():
            publish_events(settings, [upsert("busy", f"# Busy\n\nEdit {version}.", version)])
            version += 1
            time.sleep(0.02)

    with running_worker(settings, indexer) as (worker, _):
        wait_for(lambda: worker.ready.is_set())
        editor = threading.Thread(target=stream, daemon=True)
        editor.start()
        try:
            wait_for(lambda: edge_index.get_document("default", "busy"))
            publish_events(settings, [upsert("manual", manual, 1)])
            wait_for(lambda: edge_index.get_document("default", "manual"), timeout=90)
            assert editor.is_alive() and not stop.is_set(), "indexed while the stream ran"
        finally:
            stop.set()
            editor.join(10)


class _SlowSlices:
    """A processor whose bulk slices (4 texts or more) take `slice_s`: a busy embedder."""

    def __init__(self, inner: InlineProcessor, slice_s: float) -> None:
        self.inner, self.slice_s = inner, slice_s
        self.fingerprint = inner.fingerprint

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.inner, name)

    def encode(self, texts: list[str]) -> list[list[float]]:
        if len(texts) >= 4:
            time.sleep(self.slice_s)
        return self.inner.encode(texts)


@pytest.mark.broker
@pytest.mark.model
def test_live_edits_held_by_a_bulk_turn_go_next_even_when_its_slice_outlasts_the_turn(
    tmp_path, broker, edge_index, dense, sparse
):
    """A slice longer than `bulk_turn_s` must not make the next bulk turn due before the
    live edits it held: they would wait for the whole long document."""
    from ingest.broker import ensure_topics
    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path, broker, long_document_bytes=2048, bulk_turn_s=0.1, topic_partitions=1
    )
    ensure_topics(settings)
    written: list[str] = []
    processor = _SlowSlices(InlineProcessor(Chunker(128, 0), dense), slice_s=0.4)
    indexer = Indexer(
        edge_index, processor, sparse, on_written=lambda _t, doc_id: written.append(doc_id)
    )
    indexer.yield_group_chunks = 4  # about 20 slices of 0.4 s for the manual
    manual = "# Manual\n\n" + "\n\n".join(
        f"## Part {i}\n\nThe quokka manual explains calibration step {i} in detail."
        for i in range(80)
    )
    with running_worker(settings, indexer) as (worker, _):
        wait_for(lambda: worker.ready.is_set())
        publish_events(settings, [upsert("manual", manual, 1)])
        time.sleep(1.0)  # the manual's slices are under way
        publish_events(settings, [upsert("edit", "# Edit\n\nA one-line fix.", 1)])
        wait_for(lambda: len(written) == 2, timeout=60)
    assert written == ["edit", "manual"], written


# --- queries use every core the write path leaves free ---------------------------------


@pytest.mark.model
def test_query_encoders_use_every_core_only_while_the_write_path_is_idle():
    """Two encoders serve two batches at once, each on one torch thread (no OpenMP
    barrier waits for a core an edit holds); while the write path works, one serves."""
    import torch

    encoder = DenseEncoder("all-MiniLM-L6-v2")
    inner = encoder.encode_batch
    lock = threading.Lock()
    running, most, torch_threads = [0], [0], set()

    def spy(texts: list[str]) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            torch_threads.add(torch.get_num_threads())
        time.sleep(0.2)  # long enough for the other encoder to take the next batch
        try:
            return inner(texts)
        finally:
            with lock:
                running[0] -= 1

    def burst(tag: str) -> None:
        clients = [
            threading.Thread(target=encoder.encode_query, args=(f"{tag} query {i}",))
            for i in range(6)
        ]
        for c in clients:
            c.start()
            time.sleep(0.05)  # one batch each, not one batch for all
        for c in clients:
            c.join(30)

    encoder.encode_batch = spy  # type: ignore[method-assign]
    writing = threading.Event()
    try:
        encoder.serve_queries(2, lambda: not writing.is_set())
        burst("idle")
        assert most[0] == 2, "both cores serve queries while nothing is indexed"
        writing.set()
        time.sleep(0.2)  # the second encoder notices
        most[0] = 0
        burst("busy")
        assert most[0] == 1, "one encoder while the write path works; the other core is its"
        assert torch_threads == {1}, "each batch on one torch thread"
    finally:
        writing.clear()
    # The lock-free batch path gives the same vectors as the model's own encode.
    a = encoder.encode_array(["timezone aware datetimes"])
    b = inner(["timezone aware datetimes"])
    assert float(np.dot(a[0], b[0])) > 0.9999


# --- SIGTERM under full CPU load ends the process within its timeout -------------------


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _spin() -> None:
    while True:
        pass


@pytest.mark.broker
@pytest.mark.model
@pytest.mark.slow
def test_sigterm_under_full_cpu_load_exits_within_the_shutdown_timeout(tmp_path):
    """The embedder is busy on a long document and every core is taken by a busy loop:
    the process and its children are gone within FRESHRAG_SHUTDOWN_TIMEOUT_S, the
    broker stops last (no connection errors logged), and nothing is committed half."""
    import multiprocessing

    from ingest.publisher import Publisher

    port, broker_port = free_port(), free_port()
    timeout_s = 8
    env = {
        **os.environ,
        "FRESHRAG_DATA_DIR": str(tmp_path / "data"),
        "FRESHRAG_PORT": str(port),
        "FRESHRAG_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}",
        "FRESHRAG_API_KEYS": json.dumps({"k": {"tenant": "default", "groups": ["public"]}}),
        "FRESHRAG_SHUTDOWN_TIMEOUT_S": str(timeout_s),
        "FRESHRAG_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "FRESHRAG_KAFKA_MAX_POLL_INTERVAL_MS": "6000",
    }
    log_path = tmp_path / "up.log"
    freshrag = str(Path(sys.executable).parent / "freshrag")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [freshrag, "up", "--no-sample"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    hogs = []
    try:
        wait_for(lambda: "write path ready" in log_path.read_text(), timeout=300, interval=0.2)
        children = _children(proc.pid)
        assert len(children) >= 4, "broker, two parsers and the embedder"
        manual = "\n\n".join(
            f"Section {i}\n{'=' * 20}\n\n" + " ".join(f"ocelot{i} word{j}" for j in range(200))
            for i in range(600)
        )
        pub = Publisher(f"127.0.0.1:{broker_port}", "documents")
        pub.publish([upsert("manual", manual, 1)], progress=False)
        pub.close()
        ctx = multiprocessing.get_context("spawn")
        hogs = [ctx.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 2)]
        for h in hogs:
            h.start()
        time.sleep(4)  # parsing and embedding the manual now
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s + 6)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"still running {timeout_s + 6} s after SIGTERM:\n{log_path.read_text()}")
        took = time.monotonic() - sent
    finally:
        for h in hogs:
            h.kill()
        if proc.poll() is None:
            proc.kill()
    text = log_path.read_text()
    assert took <= timeout_s + 3, f"exit took {took:.1f}s"
    wait_for(lambda: not any(_alive(pid) for pid in children), timeout=5)
    assert "No node available" not in text and "Connection refused" not in text, text
    assert "bye" in text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (reaped later by init) is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
