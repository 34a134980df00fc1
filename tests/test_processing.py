"""The write path's CPU lane: a child process that parses, chunks and embeds."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ingest.chunker import Chunker
from ingest.parser import UnsupportedDocument
from ingest.processing import ChildProcessor, InlineProcessor

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


def test_the_child_chunks_and_embeds_like_the_inline_path(child, dense):
    inline = InlineProcessor(Chunker(128, 0), dense)
    there, here = child.prepare(DOC, "text/markdown"), inline.prepare(DOC, "text/markdown")
    assert [c.hash for c in there.chunks] == [c.hash for c in here.chunks]
    texts = [c.text for c in here.chunks]
    a, b = np.asarray(child.encode(texts)), np.asarray(dense.encode(texts))
    assert (np.sum(a * b, axis=1) > 0.999).all()


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
