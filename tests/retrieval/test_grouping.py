"""Document boost and section grouping over ranked candidates (pure logic, no index)."""

import numpy as np
import pytest

from retrieval.grouping import boost_by_document, boost_by_heading, group_sections
from retrieval.store.types import SearchHit

pytestmark = pytest.mark.unit


def hit(pid, score, doc, section="S", index=0, text=None, path=()):
    payload = {
        "tenant": "t",
        "doc_id": doc,
        "section": section,
        "chunk_index": index,
        "path": list(path),
        "text": text if text is not None else f"## {section}\n\n{doc}-{index}",
    }
    return SearchHit(pid, score, payload)


def test_a_page_with_several_matches_outranks_one_lucky_chunk():
    hits = [
        hit("r", 0.50, "releases"),
        hit("a", 0.45, "guide", index=1),
        hit("b", 0.30, "guide", index=4),
    ]
    boosted = boost_by_document(hits, 0.2)
    assert [h.id for h in boosted] == ["a", "r", "b"]
    assert boosted[0].score == 0.45 + 0.2 * 0.30
    assert boost_by_document(hits, 0.0) == hits  # off: the fused order as is


def unit(*xs):
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_a_chunk_under_a_heading_that_matches_the_query_moves_up():
    vectors = {"Data Migrations": unit(1, 0), "AddField": unit(0, 1), "Guide": unit(1, 1)}
    calls = []

    def encode(texts):
        calls.append(texts)
        return [vectors[t] for t in texts]

    hits = [
        hit("a", 0.40, "ops", section="AddField"),
        hit("b", 0.35, "topics", section="Data Migrations"),
        hit("c", 0.30, "topics", section="Data Migrations", index=2),
        SearchHit("d", 0.34, {"doc_id": "guide", "title": "Guide"}),  # no section: the title
        SearchHit("e", 0.33, {"doc_id": "bare"}),  # nothing to compare: no bonus
    ]
    out = boost_by_heading(hits, unit(1, 0), encode, 0.3)
    assert [h.id for h in out] == ["b", "c", "d", "a", "e"]
    assert out[0].score == 0.35 + 0.3 * 1.0
    assert calls == [["AddField", "Data Migrations", "Guide"]]  # each heading once
    assert boost_by_heading(hits, unit(1, 0), encode, 0.0) == hits  # off: no encode call
    assert len(calls) == 1


def test_a_heading_that_does_not_describe_its_text_is_replaced_by_the_text():
    """'Entry 7' says nothing: its hit is compared by its own vector (less a cost), so a
    section is not pulled down for an uninformative heading."""
    vectors = {"Entry 7": unit(0, 0, 1), "Data Migrations": unit(1, 0, 0)}
    q = unit(1, 1, 0)
    hits = [
        SearchHit("m", 0.40, {"doc_id": "a", "section": "Data Migrations"}, list(unit(1, 0, 0))),
        SearchHit("e", 0.40, {"doc_id": "b", "section": "Entry 7"}, list(unit(1, 1, 0))),
    ]
    out = boost_by_heading(hits, q, lambda ts: [vectors[t] for t in ts], 1.0)
    by_id = {h.id: h.score for h in out}
    assert np.isclose(by_id["m"], 0.40 + float(q @ unit(1, 0, 0)))  # a fitting heading
    assert np.isclose(by_id["e"], 0.40 + 1.0 - 0.1)  # its text (cos 1.0) less the cost
    assert [h.id for h in out] == ["e", "m"]
    # Without a vector the heading's cosine stands, whatever it is.
    bare = [SearchHit("e", 0.40, {"doc_id": "b", "section": "Entry 7"})]
    assert boost_by_heading(bare, q, lambda ts: [vectors[t] for t in ts], 1.0)[0].score == 0.40


def test_the_boost_never_mixes_tenants():
    a = SearchHit("a", 0.4, {"tenant": "x", "doc_id": "d"})
    b = SearchHit("b", 0.4, {"tenant": "y", "doc_id": "d"})
    assert [h.score for h in boost_by_document([a, b], 1.0)] == [0.4, 0.4]


def test_one_hit_per_section_with_its_chunks_in_reading_order():
    hits = [
        hit("c3", 0.9, "d", "Caching", 3, "## Caching\n\nThe per-view cache, continued."),
        hit("x", 0.8, "e", "Other", 0),
        hit("c2", 0.7, "d", "Caching", 2, "## Caching\n\nThe per-view cache stores a view."),
        hit("c5", 0.6, "d", "Caching", 5, "## Caching\n\nAn unrelated tail."),
    ]
    grouped = group_sections(hits)
    assert [h.id for h in grouped] == ["c3", "x"]
    best = grouped[0]
    assert best.score == 0.9 and best.payload["chunk_index"] == 3
    assert best.payload["chunks"] == [2, 3, 5]
    # The heading once; adjacent chunks joined, a gap marked where chunk 4 was not matched.
    assert best.payload["text"] == (
        "## Caching\n\nThe per-view cache stores a view.\n\n"
        "The per-view cache, continued.\n\n[…]\n\nAn unrelated tail."
    )
    assert grouped[1].payload["chunks"] == [0]


def test_same_heading_under_different_parents_or_pages_stays_apart():
    hits = [
        hit("a", 0.9, "d", "Examples", 1, path=("Guide", "Forms")),
        hit("b", 0.8, "d", "Examples", 7, path=("Guide", "Views")),
        hit("c", 0.7, "e", "Examples", 1, path=("Guide", "Forms")),
        hit("n1", 0.6, "f", None, 0, "no headings here"),
        hit("n2", 0.5, "f", None, 1, "nor here"),
    ]
    assert [h.id for h in group_sections(hits)] == ["a", "b", "c", "n1", "n2"]
