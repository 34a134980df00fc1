"""The storage contract, as narrow ports: each caller asks only for what it uses.

Ingest writes through `ChunkStore` and `DocumentRegistry`, the read path searches through
`ChunkSearch`, readers of document versions use `DocumentLookup` (the registry's two
lookups), the answer cache keeps its entries in an `AnswerCacheStore`. A caller that
needs two names their union (`ReadIndex`, `AnswerIndex`); `Index`, all of them at once,
is for the wiring that opens a backend and hands it round. Both adapters
(`retrieval.store.edge.adapter.EdgeIndex`, `retrieval.store.server.ServerIndex`)
implement every port.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from retrieval.store.types import (
    ChunkPoint,
    Condition,
    Diversity,
    DocKey,
    DocumentState,
    Fusion,
    Recency,
    SearchHit,
    SearchMode,
    SparseVec,
    StoredChunk,
)

ChunkRecords = dict[DocKey, list[tuple[str, dict[str, Any]]]]


class ChunkStore(Protocol):
    """The chunks of documents, as ingest diffs and writes them."""

    def chunks_of(self, tenant: str, doc_id: str) -> list[StoredChunk]:
        """(id, hash, chunk_index) of a document's stored chunks."""
        ...

    def chunks_of_many(self, keys: list[DocKey]) -> dict[DocKey, list[StoredChunk]]:
        """Stored chunks of several documents in one scroll."""
        ...

    def vectors_by_hash(self, hashes: list[str]) -> dict[str, list[float]]:
        """Dense vectors already stored for these content hashes: not embedded again."""
        ...

    def upsert_chunks(self, points: list[ChunkPoint]) -> None:
        """Writes chunks (indexing any new `metadata.<key>` first)."""
        ...

    def set_payload(self, point_ids: list[str], payload: dict[str, Any]) -> None:
        """Sets these fields on these chunks."""
        ...

    def set_document_payload(self, tenant: str, doc_id: str, payload: dict[str, Any]) -> None:
        """Set fields on every chunk of a document in one filter-based update."""
        ...

    def set_chunk_indexes(self, indexes: dict[str, int]) -> None:
        """New `chunk_index` of chunks that moved (one request on a server)."""
        ...

    def delete_chunks(self, point_ids: list[str]) -> None:
        """Deletes these chunks."""
        ...

    def delete_document_chunks(self, tenant: str, doc_id: str) -> None:
        """Deletes every chunk of a document, by filter."""
        ...


class ChunkSearch(Protocol):
    """The chunks as the read path (and a copy to another model) reads them."""

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
        """`with_dense`: each hit carries its dense vector (re-ranking compares it).
        `recency` decays the (fused) scores by age, then `diversity` picks the hits by MMR
        (its order is the engine's; scores are the dense similarities): both inside the
        engine, over prefetched candidates. MMR compares dense vectors, so it needs `dense`
        whatever the mode."""
        ...

    def count_chunks(self, conditions: list[Condition]) -> int:
        """Chunks matching every condition, counted exactly."""
        ...

    def chunk_payloads(self, keys: list[DocKey]) -> ChunkRecords:
        """(point id, whole payload) of every chunk of these documents, in chunk order."""
        ...


class DocumentLookup(Protocol):
    """The newest version seen of each document, tombstones included, as readers ask."""

    def get_document(self, tenant: str, doc_id: str) -> DocumentState | None:
        """A document's registry entry, or None when it was never seen."""
        ...

    def get_documents(self, keys: list[DocKey]) -> dict[DocKey, DocumentState]:
        """Registry entries of several documents in one lookup (absent keys are left out)."""
        ...


class DocumentRegistry(DocumentLookup, Protocol):
    """The registry as ingest keeps it: lookups, writes and a walk over every entry."""

    def count_documents(self) -> int:
        """Documents indexed and not deleted."""
        ...

    def put_document(self, state: DocumentState) -> None:
        """Writes a document's entry over the one before."""
        ...

    def documents(self) -> Iterator[DocumentState]:
        """Every registry entry, tombstones included (copying an index to another model)."""
        ...


class AnswerCacheStore(Protocol):
    """The semantic answer cache's entries: their own collection, keyed by the question's
    embedding and filtered by `scope` and `expires_at`."""

    def cache_search(
        self, vector: list[float], scope: str, now: float, threshold: float
    ) -> SearchHit | None:
        """The nearest unexpired entry of `scope` at or above `threshold`, if any."""
        ...

    def cache_put(self, point_id: str, vector: list[float], payload: dict[str, Any]) -> None:
        """Stores an entry (payload: scope, created_at, expires_at, answer, cited)."""
        ...

    def cache_delete(self, point_ids: list[str]) -> None:
        """Deletes these entries."""
        ...

    def cache_purge_expired(self, now: float) -> int:
        """Deletes entries with expires_at <= now; returns how many there were."""
        ...

    def cache_count(self) -> int:
        """Entries stored, expired or not."""
        ...

    def cache_trim(self, max_entries: int) -> int:
        """Deletes the oldest entries (by created_at) beyond max_entries; returns how many."""
        ...


class StoreLifecycle(Protocol):
    """Opening, checking and removing a backend's collections."""

    backend: str  # "edge" or "server"

    def ensure_schema(self, dense_dim: int) -> None:
        """Creates the collections and payload indexes that are missing; idempotent."""
        ...

    def ping(self) -> bool:
        """Whether the backend answers (readiness checks)."""
        ...

    def close(self) -> None:
        """Releases the backend; no call may follow."""
        ...

    def drop(self) -> None:
        """Closes the index and deletes its chunks, registry and answer-cache collections."""
        ...


# --- ports as callers combine them (no methods of their own) ------------------------------


class ReadIndex(ChunkSearch, DocumentRegistry, Protocol):
    """The read path: chunk search, and the registry of what is indexed (heading warm-up)."""


class AnswerIndex(AnswerCacheStore, DocumentLookup, Protocol):
    """The answer cache: its entries, and the registry that says whether a cited document
    is still at the cited version."""


class Index(ChunkStore, ChunkSearch, DocumentRegistry, AnswerCacheStore, StoreLifecycle, Protocol):
    """Every port at once: what the wiring opens and hands to each caller."""
