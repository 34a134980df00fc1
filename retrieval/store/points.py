"""What an adapter supplies per collection for the shared code (`retrieval.store.base`).

`Points` is the handful of calls both engines have on one collection (an Edge shard, a
server collection); `Scroll` and `ChunkQuery` are the requests the shared code hands
down, in neutral terms each adapter translates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from retrieval.store.types import Condition, Diversity, Fusion, Recency, SearchMode, SparseVec

PAGE = 512  # points per scroll request


@dataclass(frozen=True, slots=True)
class Scroll:
    """One page of a scroll, as `Points.page` takes it; None keeps the engine's default."""

    limit: int
    conditions: list[Condition] | None = None
    payload: bool | list[str] | None = None
    vectors: bool | list[str] | None = None
    order_by: str | None = None  # ascending by this payload field
    offset: Any = None  # where the page starts: the offset the page before returned


class Points(Protocol):
    """One collection as the shared code reaches it: an Edge shard or a server collection.

    Records and scored points are the engine's own (`id`, `payload`, `vector`, `score`).
    """

    def page(self, scroll: Scroll) -> tuple[list[Any], Any]:
        """One page and the offset of the next (None at the end)."""
        ...

    def retrieve(self, ids: list[str]) -> list[Any]:
        """These points with their payload, no vectors."""
        ...

    def count(self, conditions: list[Condition] | None) -> int: ...

    def nearest(
        self, vector: list[float], conditions: list[Condition], threshold: float, limit: int
    ) -> list[Any]:
        """The points nearest to a dense vector, scoring at least `threshold`."""
        ...

    def upsert(self, point_id: str, vectors: dict[str, Any], payload: dict[str, Any]) -> None: ...

    def delete(self, ids: list[str]) -> None: ...

    def delete_where(self, conditions: list[Condition]) -> None: ...


@dataclass(frozen=True, slots=True)
class ChunkQuery:
    """A search as `IndexBase.search` hands it to the adapter's engine."""

    mode: SearchMode
    dense: list[float] | None
    sparse: SparseVec | None
    conditions: list[Condition]
    limit: int
    fusion: Fusion
    with_dense: bool
    recency: Recency | None = None  # decay the fused scores by age (a formula query)
    diversity: Diversity | None = None  # then MMR over the candidates (needs `dense`)
