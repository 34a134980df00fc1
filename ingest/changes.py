"""Pure decisions of the write path: which events win a batch, which chunks changed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from ingest.chunker import Chunk
from ingest.events import DocumentEvent
from retrieval.store.types import DocumentState, StoredChunk

T = TypeVar("T")


def newest_per_document(items: Iterable[tuple[DocumentEvent, T]]) -> list[tuple[DocumentEvent, T]]:
    """Keep the newest event per (tenant, doc_id); on equal versions the first one wins.

    The same rule as across batches, where an equal version is stale: which of two events
    with one version gets indexed never depends on how they were batched.
    """
    best: dict[tuple[str, str], tuple[DocumentEvent, T]] = {}
    for event, ref in items:
        key = (event.tenant, event.doc_id)
        current = best.get(key)
        if current is None or event.version > current[0].version:
            best[key] = (event, ref)
    return list(best.values())


def is_stale(event: DocumentEvent, state: DocumentState | None) -> bool:
    """An event not newer than what the registry holds (tombstones included) changes nothing."""
    return state is not None and event.version <= state.version


@dataclass(slots=True)
class ChunkPlan:
    new: list[tuple[str, Chunk]] = field(default_factory=list)  # (point id, chunk) to write
    kept: list[tuple[str, Chunk]] = field(default_factory=list)  # same id: refresh payload only
    removed: list[str] = field(default_factory=list)  # point ids that vanished


def plan_chunks(chunk_ids: list[str], chunks: list[Chunk], stored: list[StoredChunk]) -> ChunkPlan:
    """Diff the new chunk list against what the index holds for the document."""
    stored_ids = {s.id for s in stored}
    plan = ChunkPlan()
    for pid, chunk in zip(chunk_ids, chunks, strict=True):
        (plan.kept if pid in stored_ids else plan.new).append((pid, chunk))
    wanted = set(chunk_ids)
    plan.removed = sorted(s.id for s in stored if s.id not in wanted)
    return plan
