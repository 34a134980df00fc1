"""One Edge shard as the shared code reaches it (`retrieval.store.points.Points`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import qdrant_edge as qe

from retrieval.store.edge.filters import to_edge_filter
from retrieval.store.points import Scroll
from retrieval.store.schema import DENSE
from retrieval.store.types import Condition

Access = Callable[[], AbstractContextManager[qe.EdgeShard]]


class EdgePoints:
    """`access()` lends the shard for one call: the chunks' live shard, counted in use so a
    swap waits for the call, or the registry's or answer cache's (an error once closed)."""

    def __init__(self, access: Access) -> None:
        self._access = access

    def page(self, scroll: Scroll) -> tuple[list[Any], Any]:
        order_by = scroll.order_by
        request = qe.ScrollRequest(
            offset=scroll.offset,
            limit=scroll.limit,
            filter=to_edge_filter(scroll.conditions),
            with_payload=scroll.payload,
            with_vector=scroll.vectors,
            order_by=qe.OrderBy(order_by, direction=qe.Direction.Asc) if order_by else None,
        )
        with self._access() as shard:
            return shard.scroll(request)

    def retrieve(self, ids: list[str]) -> list[Any]:
        with self._access() as shard:
            return shard.retrieve(ids, True, False)

    def count(self, conditions: list[Condition] | None) -> int:
        request = qe.CountRequest(filter=to_edge_filter(conditions), exact=True)
        with self._access() as shard:
            return shard.count(request)

    def nearest(
        self, vector: list[float], conditions: list[Condition], threshold: float, limit: int
    ) -> list[Any]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector, using=DENSE),
            filter=to_edge_filter(conditions),
            score_threshold=threshold,
            with_payload=True,
        )
        with self._access() as shard:
            return shard.query(request)

    def upsert(self, point_id: str, vectors: dict[str, Any], payload: dict[str, Any]) -> None:
        self._update(qe.UpdateOperation.upsert_points([qe.Point(point_id, vectors, payload)]))

    def delete(self, ids: list[str]) -> None:
        self._update(qe.UpdateOperation.delete_points(ids))

    def delete_where(self, conditions: list[Condition]) -> None:
        self._update(qe.UpdateOperation.delete_points_by_filter(to_edge_filter(conditions)))

    def _update(self, operation: qe.UpdateOperation) -> None:
        with self._access() as shard:
            shard.update(operation)
