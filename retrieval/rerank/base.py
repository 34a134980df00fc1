"""What the read path knows of a reranker, and the text a reranker reads of a candidate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from retrieval.store.types import SearchHit

_PATH = " › "


class Reranker(Protocol):
    """Re-orders a query's candidates, best first; called in a request's query thread."""

    name: str  # "cross-encoder" or "llm": traces and logs

    def rerank(self, query: str, hits: list[SearchHit], deadline: float | None) -> list[SearchHit]:
        """`hits` best first, each scored by the reranker. `deadline`: a time.monotonic()
        instant the request must answer by (None: no deadline of its own)."""
        ...


def passage(hit: SearchHit, max_chars: int) -> str:
    """A candidate as a reranker reads it: where it sits (title › parent headings ›
    section) over its text, cut at `max_chars`. The headings say what page a section named
    "Settings" or "null" belongs to, as the chunk's own embedding did."""
    p = hit.payload
    where = [str(h) for h in (p.get("path") or ()) if h]
    if p.get("section"):
        where.append(str(p["section"]))
    elif not where and p.get("title"):
        where.append(str(p["title"]))
    heading = _PATH.join(where)
    text = str(p.get("text", ""))
    return (f"{heading}\n\n{text}" if heading else text)[:max_chars]


def by_scores(hits: list[SearchHit], scores: Sequence[float]) -> list[SearchHit]:
    """`hits` sorted by `scores` (higher first; ties keep their order), each carrying its
    new score."""
    rescored = [SearchHit(h.id, float(s), h.payload) for h, s in zip(hits, scores, strict=True)]
    return sorted(rescored, key=lambda h: -h.score)
