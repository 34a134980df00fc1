"""Apply a batch of document events to the index: parse → chunk → diff → embed → write.

Writes are idempotent (ids from content hashes, registry versions), so a redelivered
batch changes nothing. Per-document problems (bad source, unparseable file) come back
as `failed` outcomes for the dead-letter topic; index errors raise, so the consumer
retries the batch and commits nothing until it succeeds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from ingest import metrics
from ingest.changes import ChunkPlan, is_stale, plan_chunks
from ingest.chunker import Chunk, Chunker
from ingest.events import DocumentEvent
from ingest.parser import UnsupportedDocument, load_body, parse
from retrieval.encoders import DenseEncoder, SparseEncoder
from retrieval.index import ChunkPoint, DocumentState, Index, chunk_point_id

log = logging.getLogger("freshrag.ingest")

Status = Literal["indexed", "deleted", "stale", "failed"]


@dataclass(slots=True)
class Outcome:
    event: DocumentEvent
    status: Status
    reason: str | None = None
    embedded: int = 0
    kept: int = 0
    removed: int = 0


@dataclass(slots=True)
class _Prepared:
    event: DocumentEvent
    chunks: list[Chunk]
    ids: list[str]
    plan: ChunkPlan
    title: str | None = None
    stored_index: dict[str, int | None] = field(default_factory=dict)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Indexer:
    def __init__(
        self,
        index: Index,
        dense: DenseEncoder,
        sparse: SparseEncoder,
        chunker: Chunker,
        max_document_bytes: int = 20_000_000,
    ) -> None:
        self.index = index
        self.dense = dense
        self.sparse = sparse
        self.chunker = chunker
        self.max_document_bytes = max_document_bytes

    def apply(self, events: list[DocumentEvent]) -> list[Outcome]:
        """Events must already be collapsed to one per document (see `newest_per_document`)."""
        outcomes: list[Outcome] = []
        prepared: list[_Prepared] = []
        for event in events:
            state = self.index.get_document(event.tenant, event.doc_id)
            if is_stale(event, state):
                reason = f"version {event.version} is not newer than indexed {state.version}"
                outcomes.append(Outcome(event, "stale", reason))
            elif event.op == "delete":
                outcomes.append(self._delete(event))
            else:
                try:
                    prepared.append(self._prepare(event))
                except UnsupportedDocument as exc:
                    outcomes.append(Outcome(event, "failed", str(exc)))
        vectors = self._vectors_for_new_chunks(prepared)
        outcomes.extend(self._write(p, vectors) for p in prepared)
        for o in outcomes:
            metrics.EVENTS.labels(o.status).inc()
        return outcomes

    def _prepare(self, event: DocumentEvent) -> _Prepared:
        body = load_body(event.content, event.source, self.max_document_bytes)
        elements = parse(body, event.mime)
        chunks = self.chunker.chunk(elements)
        ids = [chunk_point_id(event.tenant, event.doc_id, c.hash) for c in chunks]
        stored = self.index.chunks_of(event.tenant, event.doc_id)
        title = event.title or next((e.text[:300] for e in elements if e.category == "Title"), None)
        return _Prepared(
            event,
            chunks,
            ids,
            plan_chunks(ids, chunks, stored),
            title,
            {s.id: s.chunk_index for s in stored},
        )

    def _vectors_for_new_chunks(self, prepared: list[_Prepared]) -> dict[str, list[float]]:
        """One vector per distinct new text: reuse identical chunks already stored, embed the rest."""
        texts = {c.hash: c.text for p in prepared for _, c in p.plan.new}
        if not texts:
            return {}
        vectors = self.index.vectors_by_hash(list(texts))
        missing = [h for h in texts if h not in vectors]
        encoded = self.dense.encode([texts[h] for h in missing])
        vectors.update(zip(missing, encoded, strict=True))
        metrics.CHUNKS.labels("embedded").inc(len(missing))
        metrics.CHUNKS.labels("reused_vector").inc(len(texts) - len(missing))
        return vectors

    def _payload(self, event: DocumentEvent, indexed_at: str, title: str | None) -> dict:
        return {
            "doc_id": event.doc_id,
            "tenant": event.tenant,
            "acl": list(event.acl),
            "version": event.version,
            "title": title,
            "source": event.source,
            "mime": event.mime,
            "event_time": _rfc3339(event.event_time),
            "indexed_at": indexed_at,
            "metadata": dict(event.metadata),
        }

    def _write(self, p: _Prepared, vectors: dict[str, list[float]]) -> Outcome:
        event, plan = p.event, p.plan
        now = utc_now()
        common = self._payload(event, now, p.title)
        new_texts = [c.text for _, c in plan.new]
        sparse = self.sparse.encode_documents(new_texts)
        points = [
            ChunkPoint(
                pid,
                vectors[c.hash],
                sv,
                {
                    **common,
                    "chunk_index": c.index,
                    "text": c.text,
                    "hash": c.hash,
                    "section": c.section,
                },
            )
            for (pid, c), sv in zip(plan.new, sparse, strict=True)
        ]
        self.index.upsert_chunks(points)
        kept_ids = [pid for pid, _ in plan.kept]
        self.index.set_payload(kept_ids, common)
        for pid, c in plan.kept:
            if p.stored_index.get(pid) != c.index:
                self.index.set_payload([pid], {"chunk_index": c.index})
        self.index.delete_chunks(plan.removed)
        self.index.put_document(
            DocumentState(
                tenant=event.tenant,
                doc_id=event.doc_id,
                version=event.version,
                deleted=False,
                chunk_count=len(p.chunks),
                indexed_at=now,
                event_time=common["event_time"],
                title=p.title,
                source=event.source,
                acl=list(event.acl),
            )
        )
        metrics.CHUNKS.labels("new").inc(len(plan.new))
        metrics.CHUNKS.labels("kept").inc(len(plan.kept))
        metrics.CHUNKS.labels("removed").inc(len(plan.removed))
        return Outcome(event, "indexed", None, len(plan.new), len(plan.kept), len(plan.removed))

    def _delete(self, event: DocumentEvent) -> Outcome:
        self.index.delete_document_chunks(event.tenant, event.doc_id)
        self.index.put_document(
            DocumentState(
                tenant=event.tenant,
                doc_id=event.doc_id,
                version=event.version,
                deleted=True,
                chunk_count=0,
                indexed_at=utc_now(),
                event_time=_rfc3339(event.event_time),
                title=event.title,
                source=event.source,
                acl=list(event.acl),
            )
        )
        return Outcome(event, "deleted")
