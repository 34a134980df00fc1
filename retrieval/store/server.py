"""Qdrant server adapter through qdrant-client (`FRESHRAG_QDRANT_URL`).

Same data model as the Edge adapter: named `dense` + `sparse` (IDF) vectors, payload
indexes, prefetch + RRF inside the server. Tests run it against qdrant-client's local
mode, which implements the server API in Python; never serve from local mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from retrieval.store.base import (
    IndexBase,
    document_conditions,
    prefetch_limit,
    recency_bounds,
    split_negated,
)
from retrieval.store.points import ChunkQuery, Scroll
from retrieval.store.schema import DENSE, INTEGER_INDEXES, KEYWORD_INDEXES, SPARSE, IndexKind
from retrieval.store.types import (
    ChunkPoint,
    Condition,
    Match,
    MatchAny,
    Prefix,
    Range,
    Recency,
    SparseVec,
)

_SERVER_KINDS = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "integer": qm.PayloadSchemaType.INTEGER,
    "float": qm.PayloadSchemaType.FLOAT,
    "bool": qm.PayloadSchemaType.BOOL,
}


def _condition(c: Condition) -> qm.FieldCondition:
    if isinstance(c, Match):
        return qm.FieldCondition(key=c.field, match=qm.MatchValue(value=c.value))
    if isinstance(c, MatchAny):
        return qm.FieldCondition(key=c.field, match=qm.MatchAny(any=list(c.values)))
    if isinstance(c, Range):
        return qm.FieldCondition(
            key=c.field, range=qm.Range(gte=c.gte, gt=c.gt, lte=c.lte, lt=c.lt)
        )
    if isinstance(c, Prefix):
        return qm.FieldCondition(key=c.field, match=qm.MatchPrefix(prefix=c.prefix))
    raise TypeError(f"unknown condition {c!r}")


def to_server_filter(conditions: list[Condition] | None) -> qm.Filter | None:
    if not conditions:
        return None
    must, must_not = split_negated(conditions)
    return qm.Filter(
        must=[_condition(c) for c in must], must_not=[_condition(c) for c in must_not] or None
    )


def _sparse(v: SparseVec) -> qm.SparseVector:
    return qm.SparseVector(indices=v.indices, values=v.values)


class ServerPoints:
    """One server collection as `IndexBase` reaches it (`retrieval.store.points.Points`)."""

    def __init__(self, client: QdrantClient, name: str) -> None:
        self.client = client
        self.name = name

    def page(self, scroll: Scroll) -> tuple[list[Any], Any]:
        order_by = scroll.order_by
        return self.client.scroll(
            self.name,
            scroll_filter=to_server_filter(scroll.conditions),
            limit=scroll.limit,
            offset=scroll.offset,
            order_by=qm.OrderBy(key=order_by, direction=qm.Direction.ASC) if order_by else None,
            with_payload=True if scroll.payload is None else scroll.payload,
            with_vectors=False if scroll.vectors is None else scroll.vectors,
        )

    def retrieve(self, ids: list[str]) -> list[Any]:
        return self.client.retrieve(self.name, ids, with_payload=True)

    def count(self, conditions: list[Condition] | None) -> int:
        return self.client.count(
            self.name, count_filter=to_server_filter(conditions), exact=True
        ).count

    def nearest(
        self, vector: list[float], conditions: list[Condition], threshold: float, limit: int
    ) -> list[Any]:
        return self.client.query_points(
            self.name,
            query=vector,
            using=DENSE,
            limit=limit,
            with_payload=True,
            score_threshold=threshold,
            query_filter=to_server_filter(conditions),
        ).points

    def upsert(self, point_id: str, vectors: dict[str, Any], payload: dict[str, Any]) -> None:
        point = qm.PointStruct(id=point_id, vector=vectors, payload=payload)
        self.client.upsert(self.name, points=[point], wait=True)

    def delete(self, ids: list[str]) -> None:
        self.client.delete(self.name, points_selector=qm.PointIdsList(points=ids), wait=True)

    def delete_where(self, conditions: list[Condition]) -> None:
        flt = to_server_filter(conditions)
        self.client.delete(self.name, points_selector=qm.FilterSelector(filter=flt), wait=True)


class ServerIndex(IndexBase):
    backend = "server"

    def __init__(self, client: QdrantClient, collection: str, registry: str) -> None:
        self.client = client
        self.collection = collection
        self.registry = registry
        self.answers = f"{collection}_answers"
        self._metadata_indexed: set[str] | None = None  # read from the schema on first write
        self._chunk_points = ServerPoints(client, collection)
        self._registry_points = ServerPoints(client, registry)
        self._answer_points = ServerPoints(client, self.answers)

    @classmethod
    def connect(cls, url: str, api_key: str | None, collection: str, registry: str) -> ServerIndex:
        return cls(QdrantClient(url=url, api_key=api_key, timeout=30), collection, registry)

    # --- lifecycle ---------------------------------------------------------------------

    def ensure_schema(self, dense_dim: int) -> None:
        if not self.client.collection_exists(self.collection):
            self.client.create_collection(
                self.collection,
                vectors_config={
                    DENSE: qm.VectorParams(size=dense_dim, distance=qm.Distance.COSINE)
                },
                sparse_vectors_config={SPARSE: qm.SparseVectorParams(modifier=qm.Modifier.IDF)},
            )
        # Also on a collection made by an older version: add the indexes it lacks.
        wanted = {name: qm.PayloadSchemaType.KEYWORD for name in KEYWORD_INDEXES} | {
            name: qm.PayloadSchemaType.INTEGER for name in INTEGER_INDEXES
        }
        existing = set(self.client.get_collection(self.collection).payload_schema or {})
        for name, kind in wanted.items():
            if name not in existing:
                self.client.create_payload_index(self.collection, name, kind, wait=True)
        if not self.client.collection_exists(self.registry):
            self.client.create_collection(self.registry, vectors_config={})
        if not self.client.collection_exists(self.answers):
            self.client.create_collection(
                self.answers,
                vectors_config={
                    DENSE: qm.VectorParams(size=dense_dim, distance=qm.Distance.COSINE)
                },
            )
            self.client.create_payload_index(
                self.answers, "scope", qm.PayloadSchemaType.KEYWORD, wait=True
            )
        self._ensure_answer_indexes()

    def _ensure_answer_indexes(self) -> None:
        """Float indexes for the purge filter and the trim's order_by, added to old collections too.

        Qdrant refuses order_by on a field without a range index. (Local mode reports no
        payload schema, so there they are re-declared each time: harmless, and a no-op.)
        """
        existing = self.client.get_collection(self.answers).payload_schema or {}
        for name in ("expires_at", "created_at"):
            if name not in existing:
                self.client.create_payload_index(
                    self.answers, name, qm.PayloadSchemaType.FLOAT, wait=True
                )

    def ping(self) -> bool:
        try:
            self.client.get_collections()
            return True
        except Exception:
            return False

    def close(self) -> None:
        self.client.close()

    def drop(self) -> None:
        for name in (self.collection, self.registry, self.answers):
            if self.client.collection_exists(name):
                self.client.delete_collection(name)
        self.close()

    # --- chunk writes ------------------------------------------------------------------

    def _upsert_points(self, points: list[ChunkPoint]) -> None:
        self.client.upsert(
            self.collection,
            points=[
                qm.PointStruct(
                    id=p.id, vector={DENSE: p.dense, SPARSE: _sparse(p.sparse)}, payload=p.payload
                )
                for p in points
            ],
            wait=True,
        )

    def _payload_fields(self) -> Iterable[str]:
        """The indexed fields the server reports (local mode: none, hence the record kept)."""
        return self.client.get_collection(self.collection).payload_schema or {}

    def _create_index(self, name: str, kind: IndexKind) -> None:
        self.client.create_payload_index(self.collection, name, _SERVER_KINDS[kind], wait=True)

    def set_payload(self, point_ids: list[str], payload: dict[str, Any]) -> None:
        if point_ids:
            self.client.set_payload(self.collection, payload=payload, points=point_ids, wait=True)

    def set_document_payload(self, tenant: str, doc_id: str, payload: dict[str, Any]) -> None:
        flt = to_server_filter(document_conditions(tenant, doc_id))
        self.client.set_payload(self.collection, payload=payload, points=flt, wait=True)

    def set_chunk_indexes(self, indexes: dict[str, int]) -> None:
        if indexes:
            self.client.batch_update_points(
                self.collection,
                [
                    qm.SetPayloadOperation(
                        set_payload=qm.SetPayload(payload={"chunk_index": n}, points=[pid])
                    )
                    for pid, n in indexes.items()
                ],
                wait=True,
            )

    def delete_chunks(self, point_ids: list[str]) -> None:
        if point_ids:
            self._chunk_points.delete(point_ids)

    def delete_document_chunks(self, tenant: str, doc_id: str) -> None:
        self._chunk_points.delete_where(document_conditions(tenant, doc_id))

    # --- search ------------------------------------------------------------------------

    def _search_points(self, query: ChunkQuery) -> list[Any]:
        flt = to_server_filter(query.conditions)
        res = self.client.query_points(
            self.collection,
            **chunk_query(query, flt),
            query_filter=flt,
            limit=query.limit,
            with_payload=True,
            with_vectors=[DENSE] if query.with_dense else False,
        )
        return res.points


# --- a chunk search as one Query API request ---------------------------------------------
# The mode's list (nearest points, or both fused), then the optional stages, each over the
# one before as a nested prefetch: the recency decay (a formula), then MMR. With no stage
# on, the request is the plain one. The same plan as retrieval/store/edge/queries.py.


def chunk_query(query: ChunkQuery, flt: qm.Filter | None) -> dict[str, Any]:
    """`query_points` arguments (query, using, prefetch) for a search."""
    n = prefetch_limit(query.limit)
    stage = _ranked(query, flt, n)
    if query.recency is not None:
        stage = {"query": _decay(query.recency), "prefetch": [_prefetch(stage, n, flt)]}
    if query.diversity is not None:
        d = query.diversity
        candidates = max(d.candidates, n)
        mmr = qm.Mmr(diversity=d.diversity, candidates_limit=candidates)
        stage = {
            "query": qm.NearestQuery(nearest=query.dense, mmr=mmr),
            "using": DENSE,
            "prefetch": [_prefetch(stage, candidates, flt)],
        }
    return stage


def _ranked(query: ChunkQuery, flt: qm.Filter | None, n: int) -> dict[str, Any]:
    dense = {"query": query.dense, "using": DENSE}
    if query.mode == "dense":
        return dense
    sparse = {"query": _sparse(query.sparse), "using": SPARSE}
    if query.mode == "sparse":
        return sparse
    lists = [qm.Prefetch(**dense, filter=flt, limit=n), qm.Prefetch(**sparse, filter=flt, limit=n)]
    fusion = query.fusion
    if fusion.method == "rrf":
        weights = [fusion.dense_weight, fusion.sparse_weight]
        return {"query": qm.RrfQuery(rrf=qm.Rrf(k=fusion.k, weights=weights)), "prefetch": lists}
    dbsf = qm.FusionQuery(fusion=qm.Fusion.DBSF)
    if fusion.dense_weight == fusion.sparse_weight:
        return {"query": dbsf, "prefetch": lists}
    # Weighted DBSF: each list normalised on its own, then summed with its weight.
    normalised = [qm.Prefetch(prefetch=[p], query=dbsf, limit=n) for p in lists]
    weighted = qm.SumExpression(
        sum=[
            qm.MultExpression(mult=[fusion.dense_weight, "$score[0]"]),
            qm.MultExpression(mult=[fusion.sparse_weight, "$score[1]"]),
        ]
    )
    formula = qm.FormulaQuery(formula=weighted, defaults={"$score[0]": 0.0, "$score[1]": 0.0})
    return {"query": formula, "prefetch": normalised}


def _decay(recency: Recency) -> qm.FormulaQuery:
    """score × 0.5^(age / half-life): Qdrant's exp decay is `midpoint` at `scale` away."""
    now, oldest = recency_bounds(recency)
    age_from = qm.MaxExpression(
        max=[
            qm.MinExpression(
                min=[
                    qm.DatetimeKeyExpression(datetime_key=recency.field),
                    qm.DatetimeExpression(datetime=now),
                ]
            ),
            qm.DatetimeExpression(datetime=oldest),
        ]
    )
    decay = qm.ExpDecayExpression(
        exp_decay=qm.DecayParamsExpression(
            x=age_from,
            target=qm.DatetimeExpression(datetime=now),
            scale=recency.half_life_s,
            midpoint=0.5,
        )
    )
    # A chunk without the field is not decayed (every chunk FreshRAG writes has one).
    return qm.FormulaQuery(
        formula=qm.MultExpression(mult=["$score", decay]), defaults={recency.field: now}
    )


def _prefetch(stage: dict[str, Any], limit: int, flt: qm.Filter | None) -> qm.Prefetch:
    """A stage as the prefetch of the next; a search of vectors (no prefetch) filtered."""
    searches = "prefetch" not in stage
    return qm.Prefetch(**stage, limit=limit, filter=flt if searches else None)
