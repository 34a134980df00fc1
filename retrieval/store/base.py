"""What both adapters do alike, written once: each supplies a few primitives, this the rest.

An adapter reaches each of its three collections (chunks, registry, answer cache) as
`retrieval.store.points.Points`, a handful of calls both engines have; on those,
`IndexBase` implements the chunk reads, the registry and the answer cache. What differs stays in the adapter: chunk writes (Edge logs them for its
optimiser), search requests (Edge adds its tuning) and creating collections.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from retrieval.store.points import PAGE, ChunkQuery, Points, Scroll
from retrieval.store.ports import ChunkRecords
from retrieval.store.schema import DENSE, IndexKind, metadata_indexes
from retrieval.store.types import (
    ChunkPoint,
    Condition,
    Diversity,
    DocKey,
    DocumentState,
    Fusion,
    Match,
    MatchAny,
    Not,
    Prefix,
    Range,
    Recency,
    SearchHit,
    SearchMode,
    SparseVec,
    StoredChunk,
    document_point_id,
)

# --- helpers both engines' translations use ---------------------------------------------


def split_negated(
    conditions: list[Condition],
) -> tuple[list[Condition], list[Match | MatchAny | Prefix]]:
    """(what must hold, what must not): the two halves of a Qdrant filter, for both adapters."""
    must = [c for c in conditions if not isinstance(c, Not)]
    return must, [c.condition for c in conditions if isinstance(c, Not)]


def prefetch_limit(limit: int) -> int:
    """Candidates each side of a hybrid query contributes to RRF."""
    return max(limit * 4, 40)


# Past this many half-lives the recency decay stops (0.5^100 ≈ 8e-31: scores stay finite
# and non-zero in float32, so the oldest chunks keep their order by relevance).
DECAY_HALF_LIVES = 100


def recency_bounds(recency: Recency) -> tuple[str, str]:
    """(now, the oldest instant the decay reaches), RFC 3339, for both engines' formulas."""
    now = datetime.fromisoformat(recency.now)
    span = timedelta(seconds=min(recency.half_life_s * DECAY_HALF_LIVES, 1e11))
    oldest = now - span if now - _EPOCH > span else _EPOCH
    return recency.now, oldest.isoformat().replace("+00:00", "Z")


_EPOCH = datetime(1900, 1, 1, tzinfo=UTC)


def document_conditions(tenant: str, doc_id: str) -> list[Condition]:
    """The points of one document."""
    return [Match("tenant", tenant), Match("doc_id", doc_id)]


def documents_filter(keys: list[DocKey]) -> list[Condition]:
    """Points of any of these documents (and of cross pairs: callers drop those)."""
    return [
        MatchAny("tenant", tuple(sorted({t for t, _ in keys}))),
        MatchAny("doc_id", tuple(sorted({d for _, d in keys}))),
    ]


def group_by_document(
    keys: list[DocKey], records: list[tuple[str, dict[str, Any]]]
) -> ChunkRecords:
    """(id, payload) records → per requested document, in chunk order (any-of filters on
    tenant and doc_id also match cross pairs, which are left out here)."""
    out: ChunkRecords = {k: [] for k in keys}
    for rid, payload in records:
        key = (payload.get("tenant"), payload.get("doc_id"))
        if key in out:
            out[key].append((rid, payload))
    for recs in out.values():
        recs.sort(key=lambda r: r[1].get("chunk_index") or 0)
    return out


def stored_chunks(grouped: ChunkRecords) -> dict[DocKey, list[StoredChunk]]:
    """`group_by_document`'s records as the (id, hash, chunk_index) the diff needs."""
    return {
        key: [StoredChunk(rid, p.get("hash", ""), p.get("chunk_index")) for rid, p in recs]
        for key, recs in grouped.items()
    }


def dense_of(vector: Any) -> list[float] | None:
    """The dense vector of a point's vectors (named, or the bare one)."""
    v = vector.get(DENSE) if isinstance(vector, dict) else vector
    return list(v) if v is not None else None


def pages(points: Points, scroll: Scroll) -> Iterator[list[Any]]:
    """Every page of a scroll, from the first."""
    offset = None
    while True:
        page, offset = points.page(replace(scroll, offset=offset))
        yield page
        if offset is None:
            return


def _records(recs: Iterable[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(str(r.id), r.payload or {}) for r in recs]


def _hit(point: Any, with_dense: bool = False) -> SearchHit:
    vector = dense_of(point.vector) if with_dense else None
    return SearchHit(str(point.id), float(point.score), point.payload or {}, vector)


# --- the shared half of an adapter ---------------------------------------------------------


class IndexBase(ABC):
    """The ports' methods that read the same on both engines.

    Subclasses set `_chunk_points`, `_registry_points` and `_answer_points`, and implement
    the abstract methods below and the chunk writes.
    """

    backend: str
    _chunk_points: Points
    _registry_points: Points
    _answer_points: Points
    # Metadata keys with a payload index, read from the schema on the first write; this
    # process is the collection's writer (and local mode reports no schema).
    _metadata_indexed: set[str] | None = None

    @abstractmethod
    def _search_points(self, query: ChunkQuery) -> list[Any]:
        """The engine's scored points for a search."""

    @abstractmethod
    def _upsert_points(self, points: list[ChunkPoint]) -> None:
        """Writes chunks (their metadata indexes already exist)."""

    @abstractmethod
    def _payload_fields(self) -> Iterable[str]:
        """The chunk payload fields that have an index."""

    @abstractmethod
    def _create_index(self, name: str, kind: IndexKind) -> None:
        """Adds a payload index to the chunks collection."""

    # --- chunks -------------------------------------------------------------------------

    def _scroll(
        self,
        conditions: list[Condition],
        with_vector: bool,
        fields: tuple[str, ...] | None = ("hash", "chunk_index"),
    ) -> list[Any]:
        """Every chunk matching; `fields=None` brings the whole payload."""
        payload = True if fields is None else list(fields)
        vectors = [DENSE] if with_vector else False
        scroll = Scroll(PAGE, conditions, payload, vectors)
        return [r for page in pages(self._chunk_points, scroll) for r in page]

    def chunks_of(self, tenant: str, doc_id: str) -> list[StoredChunk]:
        recs = self._scroll(document_conditions(tenant, doc_id), False)
        return [
            StoredChunk(rid, p.get("hash", ""), p.get("chunk_index")) for rid, p in _records(recs)
        ]

    def chunks_of_many(self, keys: list[DocKey]) -> dict[DocKey, list[StoredChunk]]:
        if not keys:
            return {}
        fields = ("hash", "chunk_index", "tenant", "doc_id")
        records = self._scroll(documents_filter(keys), False, fields)
        return stored_chunks(group_by_document(keys, _records(records)))

    def chunk_payloads(self, keys: list[DocKey]) -> ChunkRecords:
        if not keys:
            return {}
        records = self._scroll(documents_filter(keys), False, None)
        return group_by_document(keys, _records(records))

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
        self._upsert_points(points)

    def _index_metadata(self, points: list[ChunkPoint]) -> None:
        """A payload index for each metadata key in use, so filters on it never scan."""
        if self._metadata_indexed is None:
            self._metadata_indexed = {
                k for k in self._payload_fields() if k.startswith("metadata.")
            }
        for name, kind in metadata_indexes(points, self._metadata_indexed).items():
            self._create_index(name, kind)
            self._metadata_indexed.add(name)

    def count_chunks(self, conditions: list[Condition]) -> int:
        return self._chunk_points.count(conditions)

    def search(
        self,
        mode: SearchMode,
        dense: list[float] | None,
        sparse: SparseVec | None,
        conditions: list[Condition],
        limit: int,
        fusion: Fusion = Fusion(),
        with_dense: bool = False,
        recency: Recency | None = None,
        diversity: Diversity | None = None,
    ) -> list[SearchHit]:
        query = ChunkQuery(
            mode, dense, sparse, conditions, limit, fusion, with_dense, recency, diversity
        )
        return [_hit(p, with_dense) for p in self._search_points(query)]

    # --- registry -----------------------------------------------------------------------

    def get_document(self, tenant: str, doc_id: str) -> DocumentState | None:
        recs = self._registry_points.retrieve([document_point_id(tenant, doc_id)])
        return DocumentState.from_payload(recs[0].payload) if recs and recs[0].payload else None

    def get_documents(self, keys: list[DocKey]) -> dict[DocKey, DocumentState]:
        if not keys:
            return {}
        recs = self._registry_points.retrieve([document_point_id(t, d) for t, d in keys])
        states = [DocumentState.from_payload(r.payload) for r in recs if r.payload]
        return {(s.tenant, s.doc_id): s for s in states}

    def count_documents(self) -> int:
        """Documents indexed and not deleted (the registry, tombstones left out)."""
        return self._registry_points.count([Match("deleted", False)])

    def put_document(self, state: DocumentState) -> None:
        point_id = document_point_id(state.tenant, state.doc_id)
        self._registry_points.upsert(point_id, {}, state.to_payload())

    def documents(self) -> Iterator[DocumentState]:
        for page in pages(self._registry_points, Scroll(PAGE, payload=True)):
            yield from (DocumentState.from_payload(r.payload) for r in page if r.payload)

    # --- answer cache -------------------------------------------------------------------

    def cache_search(
        self, vector: list[float], scope: str, now: float, threshold: float
    ) -> SearchHit | None:
        conditions: list[Condition] = [Match("scope", scope), Range("expires_at", gt=now)]
        found = self._answer_points.nearest(vector, conditions, threshold, 1)
        return _hit(found[0]) if found else None

    def cache_put(self, point_id: str, vector: list[float], payload: dict[str, Any]) -> None:
        self._answer_points.upsert(point_id, {DENSE: vector}, payload)

    def cache_delete(self, point_ids: list[str]) -> None:
        if point_ids:
            self._answer_points.delete(point_ids)

    def cache_purge_expired(self, now: float) -> int:
        conditions: list[Condition] = [Range("expires_at", lte=now)]
        expired = self._answer_points.count(conditions)
        if expired:
            self._answer_points.delete_where(conditions)
        return expired

    def cache_count(self) -> int:
        return self._answer_points.count(None)

    def cache_trim(self, max_entries: int) -> int:
        excess = self.cache_count() - max_entries
        dropped = 0
        while dropped < excess:
            # Oldest first; each page is deleted before the next scroll, so no offset needed
            # (order_by scrolls do not page by offset anyway).
            limit = min(PAGE, excess - dropped)
            oldest = Scroll(limit, payload=False, vectors=False, order_by="created_at")
            page, _ = self._answer_points.page(oldest)
            if not page:
                break
            self.cache_delete([str(r.id) for r in page])
            dropped += len(page)
        return dropped
