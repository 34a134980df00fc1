"""A chunk search as one Qdrant Edge query request.

The mode's list (dense or sparse nearest points, or both fused), then the optional stages,
each over the one before as a nested prefetch: the recency decay (a formula on the fused
score and `event_time`), then MMR. With no stage on, the request is the plain one: a
nearest query, or two prefetches fused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import qdrant_edge as qe

from retrieval.store.base import prefetch_limit, recency_bounds
from retrieval.store.edge.filters import sparse_vector, to_edge_filter
from retrieval.store.points import ChunkQuery
from retrieval.store.schema import DENSE, SPARSE
from retrieval.store.types import Fusion, Recency

E = qe.Expression


@dataclass(slots=True)
class _Stage:
    """One step of the request: its query, the prefetches it reads, search params."""

    query: Any
    prefetches: list[qe.Prefetch] | None = None
    params: qe.SearchParams | None = None
    searches: bool = False  # reads vectors itself (not prefetches): filtered


def chunk_request(query: ChunkQuery, params: qe.SearchParams | None) -> qe.QueryRequest:
    """The whole search; `params` (HNSW ef, quantization) go to dense searches."""
    flt = to_edge_filter(query.conditions)
    n = prefetch_limit(query.limit)
    stage = _ranked(query, params, flt, n)
    if query.recency is not None:
        stage = _Stage(_decay(query.recency), [_prefetch(stage, n, flt)])
    if query.diversity is not None:
        d = query.diversity
        mmr = qe.Mmr(query.dense, 1.0 - d.diversity, max(d.candidates, n), using=DENSE)
        # MMR chooses among what the stage before ranked (its best `n`).
        stage = _Stage(mmr, [_prefetch(stage, max(d.candidates, n), flt)])
    return qe.QueryRequest(
        limit=query.limit,
        query=stage.query,
        prefetches=stage.prefetches,
        filter=flt,
        with_payload=True,
        with_vector=[DENSE] if query.with_dense else False,
        params=stage.params,
    )


def _ranked(
    query: ChunkQuery, params: qe.SearchParams | None, flt: qe.Filter | None, n: int
) -> _Stage:
    """The mode's ranking: one nearest search, or both fused."""
    if query.mode != "dense":
        sparse = _Stage(qe.Query.Nearest(sparse_vector(query.sparse), using=SPARSE), searches=True)
        if query.mode == "sparse":
            return sparse
    dense = _Stage(qe.Query.Nearest(query.dense, using=DENSE), params=params, searches=True)
    if query.mode == "dense":
        return dense
    lists = [_prefetch(dense, n, flt), _prefetch(sparse, n, flt)]
    return _fused(query.fusion, lists, n)


def _fused(fusion: Fusion, lists: list[qe.Prefetch], n: int) -> _Stage:
    if fusion.method == "rrf":
        weights = [fusion.dense_weight, fusion.sparse_weight]
        return _Stage(qe.Fusion.Rrf(k=fusion.k, weights=weights), lists)
    if fusion.dense_weight == fusion.sparse_weight:
        return _Stage(qe.Fusion.Dbsf(), lists)
    # Weighted DBSF: each list normalised on its own (DBSF of one list), then a formula
    # sums them with their weights; a point missing from a list gets 0 from it.
    normalised = [qe.Prefetch(limit=n, prefetches=[p], query=qe.Fusion.Dbsf()) for p in lists]
    weighted = E.Sum(
        [
            E.Mult([E.Constant(fusion.dense_weight), E.Variable("$score[0]")]),
            E.Mult([E.Constant(fusion.sparse_weight), E.Variable("$score[1]")]),
        ]
    )
    return _Stage(qe.Formula(weighted, defaults={"$score[0]": 0.0, "$score[1]": 0.0}), normalised)


def _decay(recency: Recency) -> qe.Formula:
    """score × 0.5^(age / half-life): Qdrant's exp decay is `midpoint` at `scale` away."""
    now, oldest = recency_bounds(recency)
    age_from = E.Max([E.Min([E.DatetimeKey(recency.field), E.Datetime(now)]), E.Datetime(oldest)])
    decay = E.Decay(
        qe.DecayKind.Exp, age_from, target=E.Datetime(now), midpoint=0.5, scale=recency.half_life_s
    )
    # A chunk without the field is not decayed (every chunk FreshRAG writes has one).
    return qe.Formula(E.Mult([E.Variable("$score"), decay]), defaults={recency.field: now})


def _prefetch(stage: _Stage, limit: int, flt: qe.Filter | None) -> qe.Prefetch:
    return qe.Prefetch(
        limit=limit,
        query=stage.query,
        prefetches=stage.prefetches,
        params=stage.params,
        filter=flt if stage.searches else None,
    )
