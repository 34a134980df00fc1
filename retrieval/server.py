"""Qdrant server adapter through qdrant-client (`FRESHRAG_QDRANT_URL`).

Same data model as the Edge adapter: named `dense` + `sparse` (IDF) vectors, payload
indexes, prefetch + RRF inside the server. Tests run it against qdrant-client's local
mode, which implements the server API in Python; never serve from local mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from retrieval.encoders import SparseVec
from retrieval.index import (
    DENSE,
    INTEGER_INDEXES,
    KEYWORD_INDEXES,
    SPARSE,
    ChunkPoint,
    Condition,
    DocKey,
    DocumentState,
    Fusion,
    Match,
    MatchAny,
    Prefix,
    Range,
    SearchHit,
    SearchMode,
    StoredChunk,
    document_point_id,
    documents_filter,
    group_by_document,
    metadata_indexes,
    prefetch_limit,
    split_negated,
    stored_chunks,
)

_PAGE = 512
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


def to_server_filter(conditions: list[Condition]) -> qm.Filter | None:
    if not conditions:
        return None
    must, must_not = split_negated(conditions)
    return qm.Filter(
        must=[_condition(c) for c in must], must_not=[_condition(c) for c in must_not] or None
    )


def _sparse(v: SparseVec) -> qm.SparseVector:
    return qm.SparseVector(indices=v.indices, values=v.values)


class ServerIndex:
    backend = "server"

    def __init__(self, client: QdrantClient, collection: str, registry: str) -> None:
        self.client = client
        self.collection = collection
        self.registry = registry
        self.answers = f"{collection}_answers"
        self._metadata_indexed: set[str] | None = None  # read from the schema on first write

    @classmethod
    def connect(cls, url: str, api_key: str | None, collection: str, registry: str) -> ServerIndex:
        return cls(QdrantClient(url=url, api_key=api_key, timeout=30), collection, registry)

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

    # --- chunks ------------------------------------------------------------------------

    def _scroll(
        self,
        conditions: list[Condition],
        with_vector: bool,
        fields: tuple[str, ...] | None = ("hash", "chunk_index"),
    ) -> list[qm.Record]:
        """Every point matching; `fields=None` brings the whole payload."""
        out: list[qm.Record] = []
        offset = None
        while True:
            page, offset = self.client.scroll(
                self.collection,
                scroll_filter=to_server_filter(conditions),
                limit=_PAGE,
                offset=offset,
                with_payload=True if fields is None else list(fields),
                with_vectors=[DENSE] if with_vector else False,
            )
            out.extend(page)
            if offset is None:
                return out

    def chunks_of(self, tenant: str, doc_id: str) -> list[StoredChunk]:
        recs = self._scroll([Match("tenant", tenant), Match("doc_id", doc_id)], False)
        return [
            StoredChunk(
                str(r.id), (r.payload or {}).get("hash", ""), (r.payload or {}).get("chunk_index")
            )
            for r in recs
        ]

    def chunks_of_many(self, keys: list[DocKey]) -> dict[DocKey, list[StoredChunk]]:
        if not keys:
            return {}
        fields = ("hash", "chunk_index", "tenant", "doc_id")
        records = self._scroll(documents_filter(keys), False, fields)
        return stored_chunks(
            group_by_document(keys, [(str(r.id), r.payload or {}) for r in records])
        )

    def vectors_by_hash(self, hashes: list[str]) -> dict[str, list[float]]:
        if not hashes:
            return {}
        out: dict[str, list[float]] = {}
        for r in self._scroll([MatchAny("hash", tuple(hashes))], True):
            if isinstance(r.vector, dict) and DENSE in r.vector:
                out[(r.payload or {})["hash"]] = list(r.vector[DENSE])
        return out

    def upsert_chunks(self, points: list[ChunkPoint]) -> None:
        if not points:
            return
        self._index_metadata(points)
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

    def _index_metadata(self, points: list[ChunkPoint]) -> None:
        """A payload index for each metadata key in use, so filters on it never scan.

        The indexed keys are remembered: local mode reports no payload schema, and a server
        need not be asked again for every batch.
        """
        if self._metadata_indexed is None:
            schema = self.client.get_collection(self.collection).payload_schema or {}
            self._metadata_indexed = {k for k in schema if k.startswith("metadata.")}
        for name, kind in metadata_indexes(points, self._metadata_indexed).items():
            self.client.create_payload_index(self.collection, name, _SERVER_KINDS[kind], wait=True)
            self._metadata_indexed.add(name)

    def set_payload(self, point_ids: list[str], payload: dict[str, Any]) -> None:
        if point_ids:
            self.client.set_payload(self.collection, payload=payload, points=point_ids, wait=True)

    def set_document_payload(self, tenant: str, doc_id: str, payload: dict[str, Any]) -> None:
        flt = to_server_filter([Match("tenant", tenant), Match("doc_id", doc_id)])
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
            self.client.delete(
                self.collection, points_selector=qm.PointIdsList(points=point_ids), wait=True
            )

    def delete_document_chunks(self, tenant: str, doc_id: str) -> None:
        flt = to_server_filter([Match("tenant", tenant), Match("doc_id", doc_id)])
        self.client.delete(
            self.collection, points_selector=qm.FilterSelector(filter=flt), wait=True
        )

    def count_chunks(self, conditions: list[Condition]) -> int:
        return self.client.count(
            self.collection, count_filter=to_server_filter(conditions), exact=True
        ).count

    # --- answer cache ------------------------------------------------------------------

    def cache_search(
        self, vector: list[float], scope: str, now: float, threshold: float
    ) -> SearchHit | None:
        res = self.client.query_points(
            self.answers,
            query=vector,
            using=DENSE,
            limit=1,
            with_payload=True,
            score_threshold=threshold,
            query_filter=to_server_filter([Match("scope", scope), Range("expires_at", gt=now)]),
        )
        return (
            SearchHit(
                str(res.points[0].id), float(res.points[0].score), res.points[0].payload or {}
            )
            if res.points
            else None
        )

    def cache_put(self, point_id: str, vector: list[float], payload: dict[str, Any]) -> None:
        self.client.upsert(
            self.answers,
            points=[qm.PointStruct(id=point_id, vector={DENSE: vector}, payload=payload)],
            wait=True,
        )

    def cache_delete(self, point_ids: list[str]) -> None:
        if point_ids:
            self.client.delete(
                self.answers, points_selector=qm.PointIdsList(points=point_ids), wait=True
            )

    def cache_purge_expired(self, now: float) -> int:
        flt = to_server_filter([Range("expires_at", lte=now)])
        expired = self.client.count(self.answers, count_filter=flt, exact=True).count
        if expired:
            self.client.delete(
                self.answers, points_selector=qm.FilterSelector(filter=flt), wait=True
            )
        return expired

    def cache_count(self) -> int:
        return self.client.count(self.answers, exact=True).count

    def cache_trim(self, max_entries: int) -> int:
        excess = self.cache_count() - max_entries
        dropped = 0
        while dropped < excess:
            # Oldest first; each page is deleted before the next scroll, so no offset needed
            # (order_by scrolls do not page by offset anyway).
            page, _ = self.client.scroll(
                self.answers,
                limit=min(_PAGE, excess - dropped),
                order_by=qm.OrderBy(key="created_at", direction=qm.Direction.ASC),
                with_payload=False,
                with_vectors=False,
            )
            if not page:
                break
            self.cache_delete([str(r.id) for r in page])
            dropped += len(page)
        return dropped

    # --- registry ----------------------------------------------------------------------

    def get_document(self, tenant: str, doc_id: str) -> DocumentState | None:
        recs = self.client.retrieve(
            self.registry, [document_point_id(tenant, doc_id)], with_payload=True
        )
        return DocumentState.from_payload(recs[0].payload) if recs and recs[0].payload else None

    def count_documents(self) -> int:
        """Documents indexed and not deleted (the registry, tombstones left out)."""
        flt = to_server_filter([Match("deleted", False)])
        return self.client.count(self.registry, count_filter=flt, exact=True).count

    def documents(self) -> Iterator[DocumentState]:
        offset = None
        while True:
            page, offset = self.client.scroll(
                self.registry, limit=_PAGE, offset=offset, with_payload=True, with_vectors=False
            )
            yield from (DocumentState.from_payload(r.payload) for r in page if r.payload)
            if offset is None:
                return

    def chunk_payloads(self, keys: list[DocKey]) -> dict[DocKey, list[tuple[str, dict[str, Any]]]]:
        if not keys:
            return {}
        records = self._scroll(documents_filter(keys), False, None)
        return group_by_document(keys, [(str(r.id), r.payload or {}) for r in records])

    def get_documents(self, keys: list[DocKey]) -> dict[DocKey, DocumentState]:
        if not keys:
            return {}
        recs = self.client.retrieve(
            self.registry, [document_point_id(t, d) for t, d in keys], with_payload=True
        )
        states = [DocumentState.from_payload(r.payload) for r in recs if r.payload]
        return {(s.tenant, s.doc_id): s for s in states}

    def put_document(self, state: DocumentState) -> None:
        self.client.upsert(
            self.registry,
            points=[
                qm.PointStruct(
                    id=document_point_id(state.tenant, state.doc_id),
                    vector={},
                    payload=state.to_payload(),
                )
            ],
            wait=True,
        )

    # --- search ------------------------------------------------------------------------

    def search(
        self,
        mode: SearchMode,
        dense: list[float] | None,
        sparse: SparseVec | None,
        conditions: list[Condition],
        limit: int,
        fusion: Fusion = Fusion(),
        with_dense: bool = False,
    ) -> list[SearchHit]:
        flt = to_server_filter(conditions)
        vectors = [DENSE] if with_dense else False
        if mode == "dense":
            res = self.client.query_points(
                self.collection,
                query=dense,
                using=DENSE,
                query_filter=flt,
                limit=limit,
                with_payload=True,
                with_vectors=vectors,
            )
        elif mode == "sparse":
            res = self.client.query_points(
                self.collection,
                query=_sparse(sparse),
                using=SPARSE,
                query_filter=flt,
                limit=limit,
                with_payload=True,
                with_vectors=vectors,
            )
        else:
            n = prefetch_limit(limit)
            res = self.client.query_points(
                self.collection,
                prefetch=[
                    qm.Prefetch(query=dense, using=DENSE, filter=flt, limit=n),
                    qm.Prefetch(query=_sparse(sparse), using=SPARSE, filter=flt, limit=n),
                ],
                query=qm.RrfQuery(
                    rrf=qm.Rrf(k=fusion.k, weights=[fusion.dense_weight, fusion.sparse_weight])
                ),
                query_filter=flt,
                limit=limit,
                with_payload=True,
                with_vectors=vectors,
            )
        return [
            SearchHit(
                str(p.id),
                float(p.score),
                p.payload or {},
                list(p.vector[DENSE]) if with_dense and isinstance(p.vector, dict) else None,
            )
            for p in res.points
        ]
