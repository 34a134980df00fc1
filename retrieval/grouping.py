"""From ranked chunks to what a caller wants back: pages with evidence first, each section once.

Three steps over the fused candidates (pure functions, no index):

- `boost_by_heading`: a chunk's score gains `weight` × the cosine between the query and its
  section's heading. A heading is the docs' own summary of what a section answers
  ("Avoiding race conditions using F()", "Data Migrations"), and one short line is a
  sharper match for a question than 200 tokens of the section's body. Measured on the dev
  set (`bench.quality`): hybrid page MRR@10 0.79 → 0.84; the gain held in every split of
  a 2-fold cross-validation of the weight.
- `boost_by_document`: a chunk's score gains `weight` × the scores of the other candidates
  from its document. A page with several matching chunks is more likely the page the
  question is about than a page with one lucky sentence (a release note naming the
  feature), so its chunks move up together.
- `group_sections`: the candidates of one section become one hit at the rank of the best,
  its text the matched chunks in reading order. A long section split in chunks no longer
  fills the list three times, and the answer's opening (often in the chunk before the best
  one) comes back with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from retrieval.store.types import SearchHit

_GAP = "\n\n[…]\n\n"  # between two chunks of a section that are not adjacent


_HEADING_CHARS = 200  # a heading is a line; a longer one (a parser's mistake) is cut here
# Below this cosine a heading does not describe its chunk (for 9 in 10 real Django
# headings it is over 0.16; "Entry N" stays under 0.11); such a hit is scored by its own
# text, less a cost that keeps it from outranking a heading that does match.
_FIT = 0.1
_UNFIT_COST = 0.1


def heading_of(h: SearchHit) -> str:
    """What a chunk is filed under: its section's heading, else its document's title."""
    return str(h.payload.get("section") or h.payload.get("title") or "")[:_HEADING_CHARS]


def boost_by_heading(
    hits: list[SearchHit],
    query: Sequence[float],
    encode: Callable[[list[str]], Sequence[np.ndarray]],
    weight: float,
) -> list[SearchHit]:
    """Re-rank: each hit's score + `weight` × cos(query, its heading); `encode` gives unit
    vectors of the same model as `query` (one call for the distinct headings).

    A heading that does not describe its section (cos(heading, chunk) under
    `_FIT`: "Entry 7", "Notes", a heading a tool made up) would only pull its section
    down, so such a hit is compared by its own text instead, less `_UNFIT_COST`: on the
    dev set with every gold heading replaced by "Entry N", page MRR@10 0.59 without this,
    0.80 with it (0.79 with no heading boost at all). Hits without a vector keep the
    heading's cosine.
    """
    if weight <= 0 or not hits:
        return hits
    headings = list(dict.fromkeys(filter(None, map(heading_of, hits))))
    vectors = dict(zip(headings, encode(headings), strict=True)) if headings else {}
    q = np.asarray(query, dtype=np.float32)
    boosted = []
    for h in hits:
        heading = vectors.get(heading_of(h))
        bonus = 0.0 if heading is None else float(q @ heading)
        if heading is not None and h.vector is not None:
            chunk = np.asarray(h.vector, dtype=np.float32)
            if float(heading @ chunk) < _FIT:
                bonus = float(q @ chunk) - _UNFIT_COST
        boosted.append(SearchHit(h.id, h.score + weight * bonus, h.payload, h.vector))
    return sorted(boosted, key=lambda h: -h.score)  # stable: ties keep the fused order


def boost_by_document(hits: list[SearchHit], weight: float) -> list[SearchHit]:
    """Re-rank: each hit's score + `weight` × the sum of the other hits of its document."""
    if weight <= 0 or not hits:
        return hits
    totals: dict[tuple[str, str], float] = {}
    for h in hits:
        key = _doc(h)
        totals[key] = totals.get(key, 0.0) + h.score
    boosted = [
        SearchHit(h.id, h.score + weight * (totals[_doc(h)] - h.score), h.payload) for h in hits
    ]
    return sorted(boosted, key=lambda h: -h.score)  # stable: ties keep the fused order


def group_sections(hits: list[SearchHit]) -> list[SearchHit]:
    """One hit per (document, section), at the rank and score of its best chunk.

    Its text is the section's matched chunks in chunk order (a repeated section heading
    dropped, `[…]` where chunks in between were not matched); `chunk_index` stays the best
    chunk's and `chunks` lists every index merged.
    """
    groups: dict[tuple, list[SearchHit]] = {}
    for h in hits:
        groups.setdefault(_section(h), []).append(h)
    out = []
    for members in groups.values():
        best = members[0]
        if len(members) == 1:
            out.append(SearchHit(best.id, best.score, {**best.payload, "chunks": [_index(best)]}))
            continue
        ordered = sorted(members, key=_index)
        heading = _heading_line(best)
        parts: list[str] = []
        previous: int | None = None
        for m in ordered:
            text = m.payload.get("text", "")
            if parts and heading and text.startswith(heading):
                text = text[len(heading) :].lstrip("\n")
            if parts:
                parts.append("\n\n" if previous is not None and _index(m) == previous + 1 else _GAP)
            parts.append(text)
            previous = _index(m)
        payload = {**best.payload, "text": "".join(parts), "chunks": [_index(m) for m in ordered]}
        out.append(SearchHit(best.id, best.score, payload))
    return out


def _doc(h: SearchHit) -> tuple[str, str]:
    return (h.payload.get("tenant", ""), h.payload.get("doc_id", ""))


def _section(h: SearchHit) -> tuple:
    # No section (a document without headings): every chunk is its own group.
    section = h.payload.get("section")
    path = tuple(h.payload.get("path") or ())  # two "Examples" under different parents
    return (*_doc(h), path, section) if section else (*_doc(h), "\x00", h.id)


def _index(h: SearchHit) -> int:
    return int(h.payload.get("chunk_index") or 0)


def _heading_line(h: SearchHit) -> str:
    section = h.payload.get("section")
    return f"## {section}" if section else ""
