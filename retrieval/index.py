"""The small index interface both Qdrant backends implement, and its data types.

Everything above this line (ingest, retrieval, API) is backend-blind: it speaks
`ChunkPoint`, `DocumentState` and the neutral `Condition`s below; `edge.py` and
`server.py` translate them for Qdrant Edge and for a Qdrant server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from retrieval.encoders import SparseVec

SearchMode = Literal["hybrid", "dense", "sparse"]
DocKey = tuple[str, str]  # (tenant, doc_id)

DENSE = "dense"
SPARSE = "sparse"

# Payload fields with an index; doc_id/tenant/acl/hash are keywords, version an integer.
# Every field a request may filter on gets a payload index, so a filtered search on a big
# collection (or a Qdrant server in strict mode) never scans payloads.
KEYWORD_INDEXES = ("doc_id", "tenant", "acl", "hash", "title", "source", "mime")
INTEGER_INDEXES = ("version", "chunk_index")
# `metadata.<key>` fields get an index when first written, up to this many: keys come from
# events, so an unbounded number of them must not mean an unbounded number of indexes.
MAX_METADATA_INDEXES = 64
IndexKind = Literal["keyword", "integer", "float", "bool"]

_NAMESPACE = uuid.UUID("6f1f6c1e-7d0b-4c55-9a7e-1f0c2b7e9a11")


def chunk_point_id(tenant: str, doc_id: str, content_hash: str) -> str:
    """Stable id: an unchanged chunk keeps its id (and so its vector) across versions."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{doc_id}\x00{content_hash}"))


def document_point_id(tenant: str, doc_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{doc_id}"))


@dataclass(frozen=True, slots=True)
class Fusion:
    """Weighted reciprocal-rank fusion of the dense and sparse lists, as Qdrant computes it:
    a point at rank r (1-based) of a list with weight w adds 1 / (r / w + k - 1)."""

    k: int = 60
    dense_weight: float = 1.0
    sparse_weight: float = 1.0


# --- neutral filter conditions (all must hold) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    field: str
    value: str | int | bool


@dataclass(frozen=True, slots=True)
class MatchAny:
    field: str
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Range:
    field: str
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None


@dataclass(frozen=True, slots=True)
class Prefix:
    """A keyword field that starts with `prefix` (e.g. every doc_id under `releases/`)."""

    field: str
    prefix: str


@dataclass(frozen=True, slots=True)
class Not:
    """Excludes what `condition` matches; a point without the field is kept."""

    condition: Match | MatchAny | Prefix


Condition = Match | MatchAny | Range | Prefix | Not


def split_negated(
    conditions: list[Condition],
) -> tuple[list[Condition], list[Match | MatchAny | Prefix]]:
    """(what must hold, what must not): the two halves of a Qdrant filter, for both adapters."""
    must = [c for c in conditions if not isinstance(c, Not)]
    return must, [c.condition for c in conditions if isinstance(c, Not)]


# --- records ------------------------------------------------------------------------------


@dataclass(slots=True)
class ChunkPoint:
    id: str
    dense: list[float]
    sparse: SparseVec
    payload: dict[str, Any]


@dataclass(slots=True)
class StoredChunk:
    id: str
    hash: str
    chunk_index: int | None = None


@dataclass(slots=True)
class DocumentState:
    """Registry entry: the newest version seen per (tenant, doc_id), tombstones included."""

    tenant: str
    doc_id: str
    version: int
    deleted: bool
    chunk_count: int
    indexed_at: str
    event_time: str | None = None
    title: str | None = None
    source: str | None = None
    acl: list[str] = field(default_factory=list)
    content_hash: str | None = None  # body + mime + parser/chunk settings: unchanged → skip

    def to_payload(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "doc_id": self.doc_id,
            "version": self.version,
            "deleted": self.deleted,
            "chunk_count": self.chunk_count,
            "indexed_at": self.indexed_at,
            "event_time": self.event_time,
            "title": self.title,
            "source": self.source,
            "acl": list(self.acl),
            "content_hash": self.content_hash,
        }

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> DocumentState:
        return cls(
            tenant=p["tenant"],
            doc_id=p["doc_id"],
            version=int(p["version"]),
            deleted=bool(p["deleted"]),
            chunk_count=int(p.get("chunk_count", 0)),
            indexed_at=p["indexed_at"],
            event_time=p.get("event_time"),
            title=p.get("title"),
            source=p.get("source"),
            acl=list(p.get("acl") or []),
            content_hash=p.get("content_hash"),
        )


@dataclass(slots=True)
class SearchHit:
    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    vector: list[float] | None = None  # the dense vector, when the search asked for it


class Index(Protocol):
    """What ingest and retrieval need from Qdrant; implemented by EdgeIndex and ServerIndex."""

    backend: str

    def ensure_schema(self, dense_dim: int) -> None: ...

    def chunks_of(self, tenant: str, doc_id: str) -> list[StoredChunk]: ...

    def chunks_of_many(self, keys: list[DocKey]) -> dict[DocKey, list[StoredChunk]]:
        """Stored chunks of several documents in one scroll."""
        ...

    def vectors_by_hash(self, hashes: list[str]) -> dict[str, list[float]]: ...

    def upsert_chunks(self, points: list[ChunkPoint]) -> None: ...

    def set_payload(self, point_ids: list[str], payload: dict[str, Any]) -> None: ...

    def set_document_payload(self, tenant: str, doc_id: str, payload: dict[str, Any]) -> None:
        """Set fields on every chunk of a document in one filter-based update."""
        ...

    def set_chunk_indexes(self, indexes: dict[str, int]) -> None:
        """New `chunk_index` of chunks that moved (one request on a server)."""
        ...

    def delete_chunks(self, point_ids: list[str]) -> None: ...

    def delete_document_chunks(self, tenant: str, doc_id: str) -> None: ...

    def get_document(self, tenant: str, doc_id: str) -> DocumentState | None: ...

    def count_documents(self) -> int:
        """Documents indexed and not deleted."""
        ...

    def get_documents(self, keys: list[DocKey]) -> dict[DocKey, DocumentState]:
        """Registry entries of several documents in one lookup (absent keys are left out)."""
        ...

    def put_document(self, state: DocumentState) -> None: ...

    def documents(self) -> Iterator[DocumentState]:
        """Every registry entry, tombstones included (copying an index to another model)."""
        ...

    def chunk_payloads(self, keys: list[DocKey]) -> dict[DocKey, list[tuple[str, dict[str, Any]]]]:
        """(point id, whole payload) of every chunk of these documents, in chunk order."""
        ...

    def drop(self) -> None:
        """Closes the index and deletes its chunks, registry and answer-cache collections."""
        ...

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
        """`with_dense`: each hit carries its dense vector (re-ranking compares it)."""
        ...

    def count_chunks(self, conditions: list[Condition]) -> int: ...

    # The semantic answer cache: its own collection, keyed by the question's embedding.
    def cache_search(
        self, vector: list[float], scope: str, now: float, threshold: float
    ) -> SearchHit | None: ...

    def cache_put(self, point_id: str, vector: list[float], payload: dict[str, Any]) -> None: ...

    def cache_delete(self, point_ids: list[str]) -> None: ...

    def cache_purge_expired(self, now: float) -> int:
        """Deletes entries with expires_at <= now; returns how many there were."""
        ...

    def cache_count(self) -> int: ...

    def cache_trim(self, max_entries: int) -> int:
        """Deletes the oldest entries (by created_at) beyond max_entries; returns how many."""
        ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


def metadata_indexes(
    points: list[ChunkPoint], indexed: set[str], limit: int = MAX_METADATA_INDEXES
) -> dict[str, IndexKind]:
    """The `metadata.<key>` fields these points bring that have no index yet, and the kind
    each needs (from the first value seen: bool, integer, float, else keyword), in the
    order they appear, so that `indexed` plus them stays within `limit`."""
    room = limit - len(indexed)
    out: dict[str, IndexKind] = {}
    for p in points:
        for key, value in (p.payload.get("metadata") or {}).items():
            name = f"metadata.{key}"
            if name in indexed or name in out:
                continue
            if len(out) >= room:
                return out
            if isinstance(value, bool):
                out[name] = "bool"
            elif isinstance(value, int):
                out[name] = "integer"
            elif isinstance(value, float):
                out[name] = "float"
            else:
                out[name] = "keyword"
    return out


def documents_filter(keys: list[DocKey]) -> list[Condition]:
    """Points of any of these documents (and of cross pairs: callers drop those)."""
    return [
        MatchAny("tenant", tuple(sorted({t for t, _ in keys}))),
        MatchAny("doc_id", tuple(sorted({d for _, d in keys}))),
    ]


def group_by_document(
    keys: list[DocKey], records: list[tuple[str, dict[str, Any]]]
) -> dict[DocKey, list[tuple[str, dict[str, Any]]]]:
    """(id, payload) records → per requested document, in chunk order (any-of filters on
    tenant and doc_id also match cross pairs, which are left out here)."""
    out: dict[DocKey, list[tuple[str, dict[str, Any]]]] = {k: [] for k in keys}
    for rid, payload in records:
        key = (payload.get("tenant"), payload.get("doc_id"))
        if key in out:
            out[key].append((rid, payload))
    for recs in out.values():
        recs.sort(key=lambda r: r[1].get("chunk_index") or 0)
    return out


def stored_chunks(
    grouped: dict[DocKey, list[tuple[str, dict[str, Any]]]],
) -> dict[DocKey, list[StoredChunk]]:
    """`group_by_document`'s records as the (id, hash, chunk_index) the diff needs."""
    return {
        key: [StoredChunk(rid, p.get("hash", ""), p.get("chunk_index")) for rid, p in recs]
        for key, recs in grouped.items()
    }


def prefetch_limit(limit: int) -> int:
    """Candidates each side of a hybrid query contributes to RRF."""
    return max(limit * 4, 40)
