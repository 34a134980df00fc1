"""Apply a batch of document events to the index: load → parse/chunk → diff → embed → write.

Writes are idempotent (ids from content hashes, registry versions), so a redelivered
batch changes nothing. Anything wrong with one document (its source, size, parser,
chunker) comes back as a `failed` outcome for the dead-letter topic; index errors raise,
so the consumer can tell an outage (retry the batch, commit nothing) from a poison event.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from ingest.changes import ChunkPlan, is_stale, plan_chunks
from ingest.events import DocumentEvent, MalformedEvent
from ingest.parser import UnsupportedDocument, normalize_mime
from ingest.processing import PreparedDocument, Processor
from ingest.sources import SourcePolicy, load_body
from ingest.tracing import EventTraces, describe_parse, describe_plan
from retrieval.encoders import SparseEncoder
from retrieval.store.ports import Index
from retrieval.store.types import ChunkPoint, DocumentState, StoredChunk, chunk_point_id

log = logging.getLogger("freshrag.ingest")

Status = Literal["indexed", "deleted", "stale", "failed"]


@dataclass(slots=True)
class Outcome:
    """What one event did. `new` chunks = `embedded` (encoded now) + `reused` (vector copied)."""

    event: DocumentEvent
    status: Status
    reason: str | None = None
    new: int = 0
    kept: int = 0
    removed: int = 0
    embedded: int = 0
    reused: int = 0
    same_version: bool = False  # stale because exactly this version is indexed


class _Yield(Exception):  # noqa: N818  (control flow, not an error)
    """A live event arrived while a yielding batch was embedding a page."""


@dataclass(slots=True)
class _Prepared:
    event: DocumentEvent
    doc: PreparedDocument
    ids: list[str]
    plan: ChunkPlan
    stored_index: dict[str, int | None] = field(default_factory=dict)
    content_hash: str | None = None
    embedded: int = 0


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Indexer:
    def __init__(
        self,
        index: Index,
        processor: Processor,
        sparse: SparseEncoder,
        *,
        sources: SourcePolicy | None = None,
        max_document_bytes: int = 20_000_000,
        write_batch: int = 256,
        embed_group_chunks: int = 64,
        yield_group_chunks: int = 8,
        recent_vectors: int = 2048,
        on_written: Callable[[str, str], None] | None = None,
    ) -> None:
        self.index = index
        self.processor = processor
        self.sparse = sparse
        self.sources = sources or SourcePolicy()
        self.max_document_bytes = max_document_bytes
        self.write_batch = write_batch
        self.embed_group_chunks = embed_group_chunks
        # A batch that yields to live events (a backfill) embeds in smaller calls, so a
        # live edit waits for at most one short model call before its turn.
        self.yield_group_chunks = yield_group_chunks
        self.recent_vectors = recent_vectors
        self._recent: OrderedDict[str, list[float]] = OrderedDict()
        self._parsed: OrderedDict[str | None, PreparedDocument] = OrderedDict()
        self.on_written = on_written
        self.traces = EventTraces()  # the worker opens an event's span; its stages go here

    def warm_up(self) -> None:
        self.processor.warm_up()

    def apply(self, events: list[DocumentEvent]) -> list[Outcome]:
        """Apply a whole batch (see `apply_iter`)."""
        return list(self.apply_iter(events))

    def apply_iter(
        self,
        events: list[DocumentEvent],
        interrupted: Callable[[], bool] | None = None,
        *,
        bulk: bool = False,
    ) -> Iterator[Outcome]:
        """Apply events one document at a time, yielding each outcome once it is written.

        Events must already be collapsed to one per document (see `newest_per_document`).
        One registry lookup and one chunk scroll for the whole batch; a body that is
        byte-for-byte what is indexed (same mime, parser and chunk settings) skips parse,
        chunk and embed and only refreshes version and payload. Parsing runs ahead in the
        processor while the current document is embedded and written, so each document
        is searchable as soon as its own write is done. When `interrupted()` turns true
        (a live event arrived, or the worker is stopping), the iterator stops before the
        next document; documents not yet written are left unapplied (their events stay
        uncommitted and come back). A `bulk` batch (a backfill, a long document) also
        stops while it waits for a parse and between two embedding slices of
        `yield_group_chunks`, and parses in the processor's bulk lane: it never holds a
        live edit for longer than one slice.
        """
        with contextlib.closing(self._apply_iter(events, interrupted, bulk)) as outcomes:
            for outcome in outcomes:
                self.traces.done(outcome)  # the event's span ends with its outcome
                yield outcome

    def _apply_iter(
        self, events: list[DocumentEvent], interrupted: Callable[[], bool] | None, bulk: bool
    ) -> Iterator[Outcome]:
        group_chunks = self.embed_group_chunks
        if interrupted is None:
            interrupted = lambda: False  # noqa: E731
        if bulk:
            group_chunks = min(group_chunks, self.yield_group_chunks)
        states = self.index.get_documents([(e.tenant, e.doc_id) for e in events])
        to_parse: list[tuple[DocumentEvent, str | bytes, str]] = []
        for event in events:
            state = states.get((event.tenant, event.doc_id))
            if is_stale(event, state):
                reason = f"version {event.version} is not newer than indexed {state.version}"
                same = state.version == event.version
                yield Outcome(event, "stale", reason, same_version=same)
            elif event.op == "delete":
                with self.traces.stage("ingest.write", event):
                    deleted = self._delete(event, state)
                yield deleted
            else:
                try:
                    body = load_body(event, self.sources, self.max_document_bytes)
                except (UnsupportedDocument, MalformedEvent) as exc:
                    yield Outcome(event, "failed", str(exc))
                    continue
                digest = self.content_hash(body, event.mime)
                if state is not None and not state.deleted and state.content_hash == digest:
                    with self.traces.stage(
                        "ingest.write", event, {"freshrag.write.unchanged": True}
                    ):
                        refreshed = self._refresh(event, state)
                    yield refreshed
                else:
                    to_parse.append((event, body, digest))
            if interrupted():
                break  # apply what is in hand; the rest stays for later
        if not to_parse:
            return
        stored = self.index.chunks_of_many([(e.tenant, e.doc_id) for e, _, _ in to_parse])
        # Pages parsed by a try that gave up are not parsed again.
        parsed = {d: self._parsed.pop(d) for _, _, d in to_parse if d in self._parsed}
        unparsed = [(e, body, d) for e, body, d in to_parse if d not in parsed]
        results = self.processor.prepare_many(
            [(body, e.mime) for e, body, _ in unparsed],
            bulk=bulk,
            keys=[d for _, _, d in unparsed],
        )
        # A bulk batch embeds big pages in slices and gives up on a page when a live
        # event arrives mid-page; its slices wait in `_recent` for the next try, so
        # every try moves the page on by at least one slice.
        slice_chunks = group_chunks if bulk else None
        try:
            # Micro-batches: the next documents' new chunks are embedded in one call, up
            # to `group_chunks` (many small edits share one model call; a big page goes
            # alone), then each document is written and yielded on its own.
            group: list[_Prepared] = []
            for n, (event, _, digest) in enumerate(to_parse):
                if n and interrupted():  # before waiting on the next parse (the first
                    break  # page always goes ahead: a backfill progresses under any stream)
                with self.traces.stage("ingest.parse", event) as span:
                    if digest not in parsed and bulk and not results.wait_ready(interrupted):
                        break  # the bulk parser keeps the running parse for the next try
                    doc = parsed[digest] if digest in parsed else next(results)
                    describe_parse(span, event, doc, digest in parsed)
                if isinstance(doc, UnsupportedDocument):
                    yield Outcome(event, "failed", str(doc))
                else:
                    with self.traces.stage("ingest.diff", event) as span:
                        p = self._plan(event, doc, digest, stored[(event.tenant, event.doc_id)])
                        describe_plan(span, len(p.plan.new), len(p.plan.kept), len(p.plan.removed))
                    group.append(p)
                # Embed now when the group is full, or when the next parse is not done:
                # the parser keeps working meanwhile, so parse and embed overlap.
                if group and (
                    sum(len(p.plan.new) for p in group) >= group_chunks or not results.next_ready()
                ):
                    yield from self._embed(group, interrupted, slice_chunks)
                    group = []
            else:
                yield from self._embed(group, interrupted, slice_chunks)
                group = []
        except _Yield:
            pass
        finally:
            results.close()  # stop the parser running ahead
        # Documents parsed but not written stay unapplied (the consumer keeps their
        # events); their parses wait for the next try.
        for p in group:
            self._parsed[p.content_hash] = p.doc
        while len(self._parsed) > 32:
            self._parsed.popitem(last=False)

    def _embed(
        self, group: list[_Prepared], interrupted: Callable[[], bool], slice_chunks: int | None
    ) -> Iterator[Outcome]:
        """Embed a group's new chunks (a bulk group in slices that may yield), then write
        each document."""
        if not group:
            return
        if slice_chunks is not None and sum(len(p.plan.new) for p in group) > (
            self.recent_vectors // 2
        ):
            slice_chunks = None  # too big to resume from `_recent`: finish it now
        started, done = time.time_ns(), False
        try:
            vectors = self._vectors_for(group, interrupted, slice_chunks)
            done = True
        finally:
            self.traces.embedded(group, started, done)
        for p in group:
            with self.traces.stage("ingest.write", p.event):
                written = self._write(p, vectors)
            yield written

    def content_hash(self, body: str | bytes, mime: str) -> str:
        """What decides a document's chunks: its body, its type, the parser and chunk settings."""
        h = hashlib.sha256(f"{normalize_mime(mime)}\n{self.processor.fingerprint}\n".encode())
        h.update(body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body)
        return h.hexdigest()[:32]

    def _plan(
        self, event: DocumentEvent, doc: PreparedDocument, digest: str, stored: list[StoredChunk]
    ) -> _Prepared:
        ids = [chunk_point_id(event.tenant, event.doc_id, c.hash) for c in doc.chunks]
        return _Prepared(
            event,
            doc,
            ids,
            plan_chunks(ids, doc.chunks, stored),
            {s.id: s.chunk_index for s in stored},
            content_hash=digest,
        )

    def _vectors_for(
        self,
        group: list[_Prepared],
        interrupted: Callable[[], bool] = lambda: False,
        slice_chunks: int | None = None,
    ) -> dict[str, list[float]]:
        """One vector per new text: reuse recent or stored identical chunks, embed the rest.

        With `slice_chunks`, texts are embedded that many at a time and `_Yield` is raised
        between slices once `interrupted()`. Each embedded text is counted for the first
        document of the group that needed it.
        """
        texts, owner, vectors, missing = self._known_vectors(group)
        step = slice_chunks or max(1, len(missing))
        for i in range(0, len(missing), step):
            if i and interrupted():
                raise _Yield
            part = missing[i : i + step]
            fresh = dict(zip(part, self.processor.encode([texts[h] for h in part]), strict=True))
            self._remember(fresh)
            vectors.update(fresh)
        for h in missing:
            owner[h].embedded += 1
        return vectors

    def _known_vectors(
        self, group: list[_Prepared]
    ) -> tuple[dict[str, str], dict[str, _Prepared], dict[str, list[float]], list[str]]:
        """The group's new texts by hash, the document owning each, the vectors already
        known (recent or stored identical chunks) and the hashes still to embed."""
        texts: dict[str, str] = {}
        owner: dict[str, _Prepared] = {}
        for p in group:
            for _, c in p.plan.new:
                if c.hash not in texts:
                    texts[c.hash], owner[c.hash] = c.indexed_text, p
        vectors = {h: self._recent[h] for h in texts if h in self._recent}
        wanted = [h for h in texts if h not in vectors]
        if wanted:
            vectors.update(self.index.vectors_by_hash(wanted))
        return texts, owner, vectors, [h for h in texts if h not in vectors]

    def _remember(self, vectors: dict[str, list[float]]) -> None:
        """Keep the last `recent_vectors` embeddings: identical texts across batches, retries."""
        for h, v in vectors.items():
            self._recent[h] = v
            self._recent.move_to_end(h)
        while len(self._recent) > self.recent_vectors:
            self._recent.popitem(last=False)

    def _payload(self, event: DocumentEvent, indexed_at: str, title: str | None) -> dict:
        return {
            "doc_id": event.doc_id,
            "tenant": event.tenant,
            "acl": event.readers,
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
        title = event.title or p.doc.title
        now = utc_now()
        common = self._payload(event, now, title)
        sparse = self.sparse.encode_documents([c.indexed_text for _, c in plan.new])
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
                    "path": list(c.path),
                },
            )
            for (pid, c), sv in zip(plan.new, sparse, strict=True)
        ]
        for batch in _batches(points, self.write_batch):  # bounded requests, whatever the size
            self.index.upsert_chunks(batch)
        if plan.kept:  # one filter-based update refreshes every kept chunk
            self.index.set_document_payload(event.tenant, event.doc_id, common)
        moved = {pid: c.index for pid, c in plan.kept if p.stored_index.get(pid) != c.index}
        if moved:
            self.index.set_chunk_indexes(moved)
        for batch in _batches(plan.removed, self.write_batch * 4):
            self.index.delete_chunks(batch)
        self.index.put_document(
            DocumentState(
                tenant=event.tenant,
                doc_id=event.doc_id,
                version=event.version,
                deleted=False,
                chunk_count=len(p.doc.chunks),
                indexed_at=now,
                event_time=common["event_time"],
                title=title,
                source=event.source,
                acl=event.readers,
                content_hash=p.content_hash,
            )
        )
        self._written(event)
        return Outcome(
            event,
            "indexed",
            None,
            new=len(plan.new),
            kept=len(plan.kept),
            removed=len(plan.removed),
            embedded=p.embedded,
            reused=len(plan.new) - p.embedded,
        )

    def _refresh(self, event: DocumentEvent, state: DocumentState) -> Outcome:
        """Same body as indexed: new version and payload on every chunk, nothing re-parsed."""
        now = utc_now()
        title = event.title or state.title
        self.index.set_document_payload(
            event.tenant, event.doc_id, self._payload(event, now, title)
        )
        self.index.put_document(
            replace(
                state,
                version=event.version,
                indexed_at=now,
                event_time=_rfc3339(event.event_time),
                title=title,
                source=event.source,
                acl=event.readers,
            )
        )
        self._written(event)
        return Outcome(
            event, "indexed", "unchanged body: payload refreshed", kept=state.chunk_count
        )

    def _delete(self, event: DocumentEvent, state: DocumentState | None) -> Outcome:
        """The tombstone keeps the groups of what it deletes, so only its readers learn of it."""
        # An unknown document's tombstone is visible only to the groups the event names.
        readers = list(state.acl) if state is not None else list(event.acl or [])
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
                title=state.title if state else event.title,
                source=state.source if state else event.source,
                acl=readers,
            )
        )
        self._written(event)
        return Outcome(event, "deleted")

    def _written(self, event: DocumentEvent) -> None:
        if self.on_written is not None:
            try:
                self.on_written(event.tenant, event.doc_id)
            except Exception:  # a waiter's wake-up must never fail a write
                log.exception("document write hook failed")
