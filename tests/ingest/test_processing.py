"""The write path's CPU lane: a child process that parses, chunks and embeds."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from ingest.chunker import Chunker
from ingest.indexer import Indexer
from ingest.parser import UnsupportedDocument
from ingest.processing import ChildProcessor, InlineProcessor
from retrieval.background import lower_priority
from tests.conftest import upsert

DOC = "# Guide\n\n" + "\n\n".join(
    f"## Part {i}\n\nThe ocelot section {i} explains calibration step {i} in detail."
    for i in range(8)
)

pytestmark = pytest.mark.slow  # spawns a process that loads the model


@pytest.fixture(scope="module")
def child():
    proc = ChildProcessor("all-MiniLM-L6-v2", 32, 128, 0, parse_timeout_s=60, nice=5)
    proc.warm_up()
    yield proc
    proc.close()


@pytest.mark.model
def test_the_child_chunks_and_embeds_like_the_inline_path(child, dense):
    inline = InlineProcessor(Chunker(128, 0, model="all-MiniLM-L6-v2"), dense)
    there, here = child.prepare(DOC, "text/markdown"), inline.prepare(DOC, "text/markdown")
    assert [c.hash for c in there.chunks] == [c.hash for c in here.chunks]
    texts = [c.text for c in here.chunks]
    a, b = np.asarray(child.encode(texts)), np.asarray(dense.encode(texts))
    assert (np.sum(a * b, axis=1) > 0.999).all()


@pytest.mark.model
def test_the_write_path_says_when_it_had_work_in_hand(child, dense):
    """What a tune steps aside for (Core.busy): work in hand, then a quiet window."""
    inline = InlineProcessor(Chunker(128, 0, model="all-MiniLM-L6-v2"), dense)
    for proc in (child, inline):
        time.sleep(0.3)
        assert not proc.active(0.2)
        proc.encode([p.text for p in proc.prepare(DOC, "text/markdown").chunks])
        assert proc.active(0.2)
        time.sleep(0.3)
        assert not proc.active(0.2) and proc.active(10)


@pytest.mark.model
def test_queries_do_not_wait_for_a_batch_encode_in_the_child(child, dense):
    """The API's encoder shares no lock with the write path's: a query finishes mid-batch."""
    texts = [f"Batch passage number {i} about the ocelot calibration manual." for i in range(3000)]
    done = threading.Event()
    used_before = dense.texts_encoded

    def batch() -> None:
        child.encode(texts)
        done.set()

    threading.Thread(target=batch, daemon=True).start()
    time.sleep(0.5)  # the child is busy with the batch now
    assert not done.is_set(), "the batch should take a while"
    dense.encode_query("how do I calibrate the ocelot?")
    assert not done.is_set(), "the query was answered while the batch was still running"
    assert dense.texts_encoded == used_before + 1, "the write path never used the query encoder"
    assert done.wait(120)


@pytest.mark.model
def test_a_parse_that_hangs_is_killed_and_the_next_document_works(child):
    slow = ChildProcessor("all-MiniLM-L6-v2", 32, 128, 0, parse_timeout_s=0.05, nice=5)
    try:
        slow.warm_up()
        with pytest.raises(UnsupportedDocument, match="longer than 0.05s"):
            slow.prepare(DOC * 400, "text/markdown")
        assert slow.restarts == 1
        slow.parse_timeout_s = 60
        assert slow.prepare(DOC, "text/markdown").chunks
    finally:
        slow.close()


class _Spy:
    """Records the texts of each encode call of the processor it wraps."""

    def __init__(self, inner: ChildProcessor) -> None:
        self.inner, self.calls = inner, []
        self.fingerprint = inner.fingerprint

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.inner, name)

    def encode(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return self.inner.encode(texts)


@pytest.mark.model
def test_a_parsed_document_is_embedded_while_the_next_one_is_still_parsing(edge_index, sparse):
    """Parse and embed overlap: the small page does not wait for the big page's parse."""
    proc = ChildProcessor(
        "all-MiniLM-L6-v2", 32, 128, 0, max_chunks=100_000, parse_timeout_s=120, nice=5
    )
    spy = _Spy(proc)
    try:
        proc.warm_up()
        parses = proc.prepare_many([(DOC, "text/markdown"), (DOC * 300, "text/markdown")])
        assert next(parses).chunks
        assert not parses.next_ready(), "the big page should still be parsing"
        assert len(next(parses).chunks) > 1000
        assert parses.next_ready()  # nothing left to wait for
        parses.close()

        written: list[str] = []
        indexer = Indexer(edge_index, spy, sparse, on_written=lambda _t, d: written.append(d))
        small = upsert("small", DOC.replace("ocelot", "lynx"))
        big = upsert("big", (DOC * 300).replace("ocelot", "tapir"))
        outcomes = indexer.apply([small, big])
        assert [o.status for o in outcomes] == ["indexed", "indexed"]
        assert written == ["small", "big"]
        first = spy.calls[0]
        assert first and all("lynx" in t for t in first), (
            "the small page was embedded together with the big one, after its parse"
        )
        assert edge_index.get_document("default", "big").chunk_count > 1000
    finally:
        proc.close()


def _priority_after_lowering(idle: bool = True) -> tuple[int, int]:
    lower_priority(7, idle=idle)
    seen: list[tuple[int, int]] = []
    # A thread started afterwards (torch's OpenMP pool, say) inherits both.
    t = threading.Thread(target=lambda: seen.append((os.sched_getscheduler(0), os.nice(0))))
    t.start()
    t.join()
    return seen[0]


@pytest.mark.unit
@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_ingest_children_get_a_core_only_when_queries_leave_one_free():
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        policy, nice = pool.submit(_priority_after_lowering).result()
    assert policy == os.SCHED_IDLE and nice == os.nice(0) + 7
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        policy, nice = pool.submit(_priority_after_lowering, False).result()
    # The default: the niceness's weight, and no preempting a query thread on wake-up.
    assert policy == os.SCHED_BATCH and nice == os.nice(0) + 7
