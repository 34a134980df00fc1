import pytest

from ingest.changes import is_stale, newest_per_document, plan_chunks
from ingest.chunker import Chunk
from ingest.events import DocumentEvent
from retrieval.store.types import DocumentState, StoredChunk

pytestmark = pytest.mark.unit


def ev(doc, version, tenant="t"):
    return DocumentEvent(op="upsert", doc_id=doc, version=version, tenant=tenant, content="x")


def test_newest_event_per_document_wins_and_first_wins_ties():
    items = [
        (ev("a", 1), 0),
        (ev("b", 5), 1),
        (ev("a", 3), 2),
        (ev("a", 2), 3),
        (ev("b", 5), 4),
        (ev("a", 3, "u"), 5),
    ]
    kept = {(e.tenant, e.doc_id): (e.version, ref) for e, ref in newest_per_document(items)}
    # Ties: the first, as across batches, where an equal version is stale.
    assert kept == {("t", "a"): (3, 2), ("t", "b"): (5, 1), ("u", "a"): (3, 5)}


def test_stale_compares_with_registry_including_tombstones():
    state = DocumentState("t", "a", 4, True, 0, "now")
    assert is_stale(ev("a", 4), state) and is_stale(ev("a", 3), state)
    assert not is_stale(ev("a", 5), state) and not is_stale(ev("a", 1), None)


def test_plan_splits_new_kept_and_removed():
    chunks = [Chunk(0, "a", "ha", ""), Chunk(1, "b", "hb", ""), Chunk(2, "c", "hc", "")]
    stored = [StoredChunk("id-a", "ha", 0), StoredChunk("id-x", "hx", 1)]
    plan = plan_chunks(["id-a", "id-b", "id-c"], chunks, stored)
    assert [pid for pid, _ in plan.kept] == ["id-a"]
    assert [pid for pid, _ in plan.new] == ["id-b", "id-c"]
    assert plan.removed == ["id-x"]
