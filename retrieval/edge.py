"""Qdrant Edge adapter: the Qdrant engine in-process, one shard directory per collection.

A shard belongs to one process, so in embedded mode the worker and the API share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import qdrant_edge as qe

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
    metadata_indexes,
    prefetch_limit,
    split_negated,
)

_PAGE = 512


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


def to_edge_filter(conditions: list[Condition]) -> qe.Filter | None:
    if not conditions:
        return None
    must, must_not = split_negated(conditions)
    return qe.Filter(
        must=[_condition(c) for c in must], must_not=[_condition(c) for c in must_not] or None
    )


def _sparse(v: SparseVec) -> qe.SparseVector:
    return qe.SparseVector(indices=v.indices, values=v.values)


def _opened(shard: qe.EdgeShard | None) -> qe.EdgeShard:
    if shard is None:
        raise RuntimeError("index not initialised: call ensure_schema(dim) first")
    return shard


_EDGE_KINDS = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
}


def _ensure_payload_indexes(shard: qe.EdgeShard, wanted: dict[str, qe.PayloadSchemaType]) -> None:
    existing = set(shard.info().payload_schema)
    for name, kind in wanted.items():
        if name not in existing:
            shard.update(qe.UpdateOperation.create_field_index(name, kind))


class EdgeIndex:
    backend = "edge"

    def __init__(self, root: Path, collection: str, registry: str) -> None:
        self.root = Path(root)
        self._chunks_path = self.root / collection
        self._registry_path = self.root / registry
        self._answers_path = self.root / f"{collection}_answers"
        self._chunks: qe.EdgeShard | None = None
        self._registry: qe.EdgeShard | None = None
        self._answers: qe.EdgeShard | None = None
        self._metadata_indexed: set[str] | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def ensure_schema(self, dense_dim: int) -> None:
        if self._chunks is not None:
            return
        dense = {DENSE: qe.EdgeVectorParams(size=dense_dim, distance=qe.Distance.Cosine)}
        config = qe.EdgeConfig(
            vectors=dense,
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        self._chunks = self._open(self._chunks_path, config)
        # The registry needs no vectors; Edge wants at least one declared, so: an unused one.
        reg_config = qe.EdgeConfig(sparse_vectors={"unused": qe.EdgeSparseVectorParams()})
        self._registry = self._open(self._registry_path, reg_config)
        self._answers = self._open(self._answers_path, qe.EdgeConfig(vectors=dense))
        # Float indexes: expires_at for the purge filter, created_at for order_by in the trim.
        _ensure_payload_indexes(
            self._answers,
            {
                "scope": qe.PayloadSchemaType.Keyword,
                "expires_at": qe.PayloadSchemaType.Float,
                "created_at": qe.PayloadSchemaType.Float,
            },
        )
        _ensure_payload_indexes(
            self._chunks,
            {name: qe.PayloadSchemaType.Keyword for name in KEYWORD_INDEXES}
            | {name: qe.PayloadSchemaType.Integer for name in INTEGER_INDEXES},
        )

    @staticmethod
    def _open(path: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
        if (path / "edge_config.json").exists():
            return qe.EdgeShard.load(str(path), config)
        path.mkdir(parents=True, exist_ok=True)
        return qe.EdgeShard.create(str(path), config)

    @property
    def chunks(self) -> qe.EdgeShard:
        return _opened(self._chunks)

    @property
    def registry(self) -> qe.EdgeShard:
        return _opened(self._registry)

    def ping(self) -> bool:
        try:
            self.chunks.info()
            return True
        except Exception:
            return False

    def close(self) -> None:
        for shard in (self._chunks, self._registry, self._answers):
            if shard is not None:
                shard.flush()
                shard.close()
        self._chunks = self._registry = self._answers = None

    # --- chunks ------------------------------------------------------------------------

    def _scroll(
        self,
        conditions: list[Condition],
        with_vector: bool,
        fields: tuple[str, ...] = ("hash", "chunk_index"),
    ) -> list[qe.Record]:
        records: list[qe.Record] = []
        offset = None
        while True:
            page, offset = self.chunks.scroll(
                qe.ScrollRequest(
                    offset=offset,
                    limit=_PAGE,
                    filter=to_edge_filter(conditions),
                    with_payload=list(fields),
                    with_vector=[DENSE] if with_vector else False,
                )
            )
            records.extend(page)
            if offset is None:
                return records

    def chunks_of(self, tenant: str, doc_id: str) -> list[StoredChunk]:
        recs = self._scroll([Match("tenant", tenant), Match("doc_id", doc_id)], False)
        return [
            StoredChunk(
                str(r.id), (r.payload or {}).get("hash", ""), (r.payload or {}).get("chunk_index")
            )
            for r in recs
        ]

    def chunks_of_many(self, keys: list[DocKey]) -> dict[DocKey, list[StoredChunk]]:
        out: dict[DocKey, list[StoredChunk]] = {k: [] for k in keys}
        if not keys:
            return out
        conditions = [
            MatchAny("tenant", tuple(sorted({t for t, _ in keys}))),
            MatchAny("doc_id", tuple(sorted({d for _, d in keys}))),
        ]
        for r in self._scroll(conditions, False, ("hash", "chunk_index", "tenant", "doc_id")):
            p = r.payload or {}
            key = (p.get("tenant"), p.get("doc_id"))
            if key in out:  # the two any-of filters also match cross pairs
                out[key].append(StoredChunk(str(r.id), p.get("hash", ""), p.get("chunk_index")))
        return out

    def vectors_by_hash(self, hashes: list[str]) -> dict[str, list[float]]:
        if not hashes:
            return {}
        out: dict[str, list[float]] = {}
        for r in self._scroll([MatchAny("hash", tuple(hashes))], True):
            vec = r.vector
            if isinstance(vec, dict) and DENSE in vec:
                out[(r.payload or {})["hash"]] = list(vec[DENSE])
        return out

    def upsert_chunks(self, points: list[ChunkPoint]) -> None:
        if not points:
            return
        self._index_metadata(points)
        self.chunks.update(
            qe.UpdateOperation.upsert_points(
                [
                    qe.Point(p.id, {DENSE: p.dense, SPARSE: _sparse(p.sparse)}, p.payload)
                    for p in points
                ]
            )
        )

    def _index_metadata(self, points: list[ChunkPoint]) -> None:
        """A payload index for each metadata key in use, so filters on it never scan."""
        if self._metadata_indexed is None:  # read once; this process is the shard's writer
            schema = self.chunks.info().payload_schema
            self._metadata_indexed = {k for k in schema if k.startswith("metadata.")}
        for name, kind in metadata_indexes(points, self._metadata_indexed).items():
            self.chunks.update(qe.UpdateOperation.create_field_index(name, _EDGE_KINDS[kind]))
            self._metadata_indexed.add(name)

    def set_payload(self, point_ids: list[str], payload: dict[str, Any]) -> None:
        if point_ids:
            self.chunks.update(qe.UpdateOperation.set_payload(point_ids, payload))

    def set_document_payload(self, tenant: str, doc_id: str, payload: dict[str, Any]) -> None:
        flt = to_edge_filter([Match("tenant", tenant), Match("doc_id", doc_id)])
        self.chunks.update(qe.UpdateOperation.set_payload_by_filter(flt, payload))

    def set_chunk_indexes(self, indexes: dict[str, int]) -> None:
        for pid, n in indexes.items():  # in-process calls: no round trip to save
            self.chunks.update(qe.UpdateOperation.set_payload([pid], {"chunk_index": n}))

    def delete_chunks(self, point_ids: list[str]) -> None:
        if point_ids:
            self.chunks.update(qe.UpdateOperation.delete_points(point_ids))

    def delete_document_chunks(self, tenant: str, doc_id: str) -> None:
        flt = to_edge_filter([Match("tenant", tenant), Match("doc_id", doc_id)])
        self.chunks.update(qe.UpdateOperation.delete_points_by_filter(flt))

    def count_chunks(self, conditions: list[Condition]) -> int:
        return self.chunks.count(qe.CountRequest(filter=to_edge_filter(conditions), exact=True))

    # --- answer cache ------------------------------------------------------------------

    @property
    def answers(self) -> qe.EdgeShard:
        return _opened(self._answers)

    def cache_search(
        self, vector: list[float], scope: str, now: float, threshold: float
    ) -> SearchHit | None:
        flt = to_edge_filter([Match("scope", scope), Range("expires_at", gt=now)])
        found = self.answers.query(
            qe.QueryRequest(
                limit=1,
                query=qe.Query.Nearest(vector, using=DENSE),
                filter=flt,
                score_threshold=threshold,
                with_payload=True,
            )
        )
        return (
            SearchHit(str(found[0].id), float(found[0].score), found[0].payload or {})
            if found
            else None
        )

    def cache_put(self, point_id: str, vector: list[float], payload: dict[str, Any]) -> None:
        self.answers.update(
            qe.UpdateOperation.upsert_points([qe.Point(point_id, {DENSE: vector}, payload)])
        )

    def cache_delete(self, point_ids: list[str]) -> None:
        if point_ids:
            self.answers.update(qe.UpdateOperation.delete_points(point_ids))

    def cache_purge_expired(self, now: float) -> int:
        flt = to_edge_filter([Range("expires_at", lte=now)])
        expired = self.answers.count(qe.CountRequest(filter=flt, exact=True))
        if expired:
            self.answers.update(qe.UpdateOperation.delete_points_by_filter(flt))
        return expired

    def cache_count(self) -> int:
        return self.answers.count(qe.CountRequest(exact=True))

    def cache_trim(self, max_entries: int) -> int:
        excess = self.cache_count() - max_entries
        dropped = 0
        while dropped < excess:
            # Oldest first; each page is deleted before the next scroll, so no offset needed.
            page, _ = self.answers.scroll(
                qe.ScrollRequest(
                    limit=min(_PAGE, excess - dropped),
                    order_by=qe.OrderBy("created_at", direction=qe.Direction.Asc),
                    with_payload=False,
                    with_vector=False,
                )
            )
            if not page:
                break
            self.cache_delete([str(r.id) for r in page])
            dropped += len(page)
        return dropped

    # --- registry ----------------------------------------------------------------------

    def get_document(self, tenant: str, doc_id: str) -> DocumentState | None:
        recs = self.registry.retrieve([document_point_id(tenant, doc_id)], True, False)
        return DocumentState.from_payload(recs[0].payload) if recs and recs[0].payload else None

    def count_documents(self) -> int:
        """Documents indexed and not deleted (the registry, tombstones left out)."""
        # A scroll, not a filtered count: Edge 0.9 does not match booleans in filters.
        live, offset = 0, None
        while True:
            page, offset = self.registry.scroll(
                qe.ScrollRequest(offset=offset, limit=_PAGE, with_payload=["deleted"])
            )
            live += sum(1 for r in page if not (r.payload or {}).get("deleted"))
            if offset is None:
                return live

    def get_documents(self, keys: list[DocKey]) -> dict[DocKey, DocumentState]:
        if not keys:
            return {}
        recs = self.registry.retrieve([document_point_id(t, d) for t, d in keys], True, False)
        states = [DocumentState.from_payload(r.payload) for r in recs if r.payload]
        return {(s.tenant, s.doc_id): s for s in states}

    def put_document(self, state: DocumentState) -> None:
        point = qe.Point(document_point_id(state.tenant, state.doc_id), {}, state.to_payload())
        self.registry.update(qe.UpdateOperation.upsert_points([point]))

    # --- search ------------------------------------------------------------------------

    def search(
        self,
        mode: SearchMode,
        dense: list[float] | None,
        sparse: SparseVec | None,
        conditions: list[Condition],
        limit: int,
        fusion: Fusion = Fusion(),
    ) -> list[SearchHit]:
        flt = to_edge_filter(conditions)
        if mode == "dense":
            req = qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(dense, using=DENSE),
                filter=flt,
                with_payload=True,
            )
        elif mode == "sparse":
            req = qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(_sparse(sparse), using=SPARSE),
                filter=flt,
                with_payload=True,
            )
        else:
            n = prefetch_limit(limit)
            req = qe.QueryRequest(
                limit=limit,
                prefetches=[
                    qe.Prefetch(limit=n, query=qe.Query.Nearest(dense, using=DENSE), filter=flt),
                    qe.Prefetch(
                        limit=n, query=qe.Query.Nearest(_sparse(sparse), using=SPARSE), filter=flt
                    ),
                ],
                query=qe.Fusion.Rrf(
                    k=fusion.k, weights=[fusion.dense_weight, fusion.sparse_weight]
                ),
                filter=flt,
                with_payload=True,
            )
        return [
            SearchHit(str(p.id), float(p.score), p.payload or {}) for p in self.chunks.query(req)
        ]
