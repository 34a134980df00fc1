"""Neutral conditions and sparse vectors → their Qdrant Edge forms."""

from __future__ import annotations

import qdrant_edge as qe

from retrieval.store.base import split_negated
from retrieval.store.types import Condition, Match, MatchAny, Prefix, Range, SparseVec


def _condition(c: Condition) -> qe.FieldCondition:
    if isinstance(c, Match):
        return qe.FieldCondition(c.field, match=qe.MatchValue(c.value))
    if isinstance(c, MatchAny):
        return qe.FieldCondition(c.field, match=qe.MatchAny(list(c.values)))
    if isinstance(c, Range):
        return qe.FieldCondition(
            c.field, range=qe.RangeFloat(gte=c.gte, gt=c.gt, lte=c.lte, lt=c.lt)
        )
    if isinstance(c, Prefix):
        return qe.FieldCondition(c.field, match=qe.MatchPrefix(c.prefix))
    raise TypeError(f"unknown condition {c!r}")


def to_edge_filter(conditions: list[Condition] | None) -> qe.Filter | None:
    if not conditions:
        return None
    must, must_not = split_negated(conditions)
    return qe.Filter(
        must=[_condition(c) for c in must], must_not=[_condition(c) for c in must_not] or None
    )


def sparse_vector(v: SparseVec) -> qe.SparseVector:
    return qe.SparseVector(indices=v.indices, values=v.values)
