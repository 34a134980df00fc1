"""The values that cross the storage contract, and the ids points are stored under.

Everything above the store (ingest, retrieval, API) is backend-blind: it speaks
`ChunkPoint`, `DocumentState` and the neutral `Condition`s below, and each adapter
translates them for its engine.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class SparseVec:
    """BM25 term weights of one text (indices of its terms, their weights)."""

    indices: list[int]
    values: list[float]


SearchMode = Literal["hybrid", "dense", "sparse"]
DocKey = tuple[str, str]  # (tenant, doc_id)

_NAMESPACE = uuid.UUID("6f1f6c1e-7d0b-4c55-9a7e-1f0c2b7e9a11")


def chunk_point_id(tenant: str, doc_id: str, content_hash: str) -> str:
    """Stable id: an unchanged chunk keeps its id (and so its vector) across versions."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{doc_id}\x00{content_hash}"))


def document_point_id(tenant: str, doc_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{doc_id}"))


FusionMethod = Literal["rrf", "dbsf"]


@dataclass(frozen=True, slots=True)
class Fusion:
    """How hybrid search fuses the dense and sparse lists inside the engine.

    `rrf`: weighted reciprocal-rank fusion, as Qdrant computes it: a point at rank r
    (1-based) of a list with weight w adds 1 / (r / w + k - 1). `dbsf`: distribution-based
    score fusion: each list's scores normalised by their mean ± 3 standard deviations,
    then summed, each list's times its weight (equal weights: Qdrant's own DBSF).
    """

    k: int = 60
    dense_weight: float = 1.0
    sparse_weight: float = 1.0
    method: FusionMethod = "rrf"


@dataclass(frozen=True, slots=True)
class Recency:
    """A decay on a datetime payload field, applied to the fused scores inside the engine:
    score × 0.5^(age / half_life_s), age measured from `now` (RFC 3339). A date after
    `now` counts as `now`; past 100 half-lives the decay stops, so very old chunks keep
    their order by relevance instead of all tying at 0."""

    half_life_s: float
    now: str
    field: str = "event_time"


@dataclass(frozen=True, slots=True)
class Diversity:
    """Maximal marginal relevance over the best `candidates` points, by dense vectors:
    each next point maximises (1 - d) × sim(query, p) - d × max sim(p, already chosen),
    d = `diversity` in (0, 1] (Qdrant's own parameter; MMR's λ is 1 - d)."""

    diversity: float
    candidates: int


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
