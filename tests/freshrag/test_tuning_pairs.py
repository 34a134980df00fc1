"""Mining training pairs from stored chunks (freshrag/tuning/pairs.py): pure functions."""

from __future__ import annotations

import pytest

from freshrag.tuning.pairs import StoredChunk, count_kinds, mine_pairs, prose_sentences

pytestmark = pytest.mark.unit

HEADER = " › ".join


def chunk(text: str, path: tuple[str, ...] = ("Cache",), section: str = "Backends") -> StoredChunk:
    return StoredChunk(text, path, section)


def doc(n: int) -> list[StoredChunk]:
    """A page of three sections, one chunk each, with sentences unique to page `n`."""
    return [
        chunk(
            f"## Part {s} of page {n}\n\nThe backend number {n} stores entries for section {s} "
            f"in memory until the process exits. Every worker of page {n} reads section {s} "
            f"from that store before it answers a request.",
            (f"Page {n}",),
            f"Part {s} of page {n}",
        )
        for s in range(3)
    ]


def test_sentences_leave_out_headings_code_and_lists():
    text = (
        "## Heading line that is long enough to look like a sentence here.\n\n"
        "```\nx = 1  # a comment that has more than eight words in it.\n```\n\n"
        "- a list item with more than eight words in it, surely.\n\n"
        "Too short.\n\n"
        "This paragraph has one sentence that is long enough to count. And another one "
        "that is also long enough to be counted here."
    )
    assert prose_sentences(text) == [
        "This paragraph has one sentence that is long enough to count.",
        "And another one that is also long enough to be counted here.",
    ]


def test_each_kind_reads_like_the_index_and_cloze_hides_its_sentence():
    page = [
        chunk(
            "## Backends\n\nThe local memory backend keeps entries per process and forgets "
            "them at exit. Use the database backend when several servers share a cache."
        ),
        chunk(
            "## Backends\n\nThe file backend writes each entry to its own file under "
            "LOCATION, which the server must be able to write to."
        ),
    ]
    pairs = mine_pairs([page], HEADER, limit=100)
    kinds = {p.kind: p for p in pairs}
    assert set(kinds) == {"cloze", "heading", "neighbour"}
    assert kinds["heading"].anchor == "Cache › Backends"
    for p in pairs:  # the positive is what the encoder reads: the heading path line first
        assert p.positive.startswith("Cache\n\n## Backends")
    cloze = [p for p in pairs if p.kind == "cloze"]
    for p in cloze:
        assert p.anchor not in p.positive
    assert kinds["neighbour"].anchor == page[0].text
    assert kinds["neighbour"].positive == "Cache\n\n" + page[1].text


def test_same_anchor_twice_is_one_pair():
    boiler = "This page is part of the documentation and is kept up to date by the team."
    detail = "Its own part number {} lists the steps:\n\n- one\n- two\n- three\n- four\n- five"
    pages = [[chunk(f"## S\n\n{boiler}\n\n{detail.format(i)}", (f"P{i}",), "S")] for i in range(5)]
    pairs = mine_pairs(pages, HEADER, limit=100, mix={"cloze": 1.0})
    assert [p.anchor for p in pairs] == [boiler]


def test_mix_limit_and_seed():
    pages = [doc(n) for n in range(60)]
    pairs = mine_pairs(pages, HEADER, limit=100, mix={"cloze": 0.75, "heading": 0.25})
    kinds = count_kinds(pairs)
    assert len(pairs) == 100
    assert kinds["neighbour"] == 0
    assert 70 <= kinds["cloze"] <= 80 and 20 <= kinds["heading"] <= 30
    again = mine_pairs(pages, HEADER, limit=100, mix={"cloze": 0.75, "heading": 0.25})
    other = mine_pairs(pages, HEADER, limit=100, mix={"cloze": 0.75, "heading": 0.25}, seed=1)
    assert pairs == again and pairs != other


def test_a_short_kind_leaves_its_share_to_the_others():
    pages = [doc(n) for n in range(10)]  # 30 headings, 30 cloze sentences, no neighbours
    pairs = mine_pairs(pages, HEADER, limit=50)
    assert len(pairs) == 50 and count_kinds(pairs)["neighbour"] == 0


def test_one_long_page_cannot_make_the_whole_mix():
    long_page = [
        chunk(
            f"## S{i}\n\nSentence number {i} of the long page is long enough to count. "
            f"It is followed by another sentence {i} that is long enough.",
            ("Long",),
            f"S{i}",
        )
        for i in range(100)
    ]
    pairs = mine_pairs([long_page], HEADER, limit=1000, per_document=5)
    assert count_kinds(pairs) == {"cloze": 5, "heading": 5, "neighbour": 0}


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown pair kinds"):
        mine_pairs([doc(0)], HEADER, limit=10, mix={"questions": 1.0})
