"""Ingest traces: one `ingest.event` span per document event, from its decode to its write.

The worker opens the span when it decodes a record (as the child of the `traceparent`
header the producer sent, if any: POST /documents and ingest.publisher set one inside a
trace), the indexer adds the stages under it (`ingest.parse`, `ingest.diff`,
`ingest.embed`, `ingest.write`) and ends it with the event's outcome. What a batch leaves
unapplied (a superseded version, a bulk batch that yielded to live events, a batch that
failed and is retried) is ended with `freshrag.ingest.status = "not applied"` when the
batch ends; its record comes back and gets a new span.

Attributes are ids, versions, sizes, counts and statuses: never a title, a text or a
failure's message (a parser's error can quote the document). With tracing off, every
method returns at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from freshrag import spans
from ingest.events import DocumentEvent

if TYPE_CHECKING:
    from ingest.indexer import Outcome

_OFF: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)


class _Embedding(Protocol):
    """What the embed span reads of a planned document (ingest.indexer's `_Prepared`)."""

    event: DocumentEvent
    plan: Any
    embedded: int


class EventTraces:
    """The open `ingest.event` spans of the batch in hand, by event. One worker thread
    uses it (the consumer's apply thread)."""

    def __init__(self) -> None:
        # id(event) → (the event, kept so its id is not reused; its span; ended yet)
        self._open: dict[int, tuple[DocumentEvent, Span, bool]] = {}

    def begin(self, decoded: Sequence[tuple[DocumentEvent, Any]]) -> None:
        """An `ingest.event` span for each decoded (event, Kafka record)."""
        if not spans.enabled():
            return
        for event, record in decoded:
            if id(event) in self._open:
                continue
            parent = spans.from_kafka_headers(getattr(record, "headers", None))
            value = getattr(record, "value", None)
            attributes = {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": str(getattr(record, "topic", "")),
                "messaging.destination.partition.id": str(getattr(record, "partition", "")),
                "messaging.kafka.offset": int(getattr(record, "offset", -1)),
                "messaging.message.body.size": len(value or b""),
                **_ids(event),
            }
            span = spans.start("ingest.event", parent, attributes, kind=SpanKind.CONSUMER)
            self._open[id(event)] = (event, span, False)

    def stage(
        self, name: str, event: DocumentEvent, attributes: spans.Attributes | None = None
    ) -> AbstractContextManager[Span]:
        """A stage of `event` (parse, diff, write) as a child of its span; the no-op when
        tracing is off or the event has no span (applied outside the worker)."""
        entry = self._open.get(id(event))
        if entry is None:
            return _OFF
        return _stage(name, entry[1], attributes)

    def embedded(self, group: Sequence[_Embedding], started_ns: int, done: bool) -> None:
        """The group's embedding call (its documents' new chunks in one call to the
        embedder child) as an `ingest.embed` span under each event; `done` False when it
        stopped early (a bulk batch yielding to live events, an error)."""
        if not self._open:
            return
        shared = {
            "freshrag.embed.documents": len(group),
            "freshrag.embed.texts": sum(p.embedded for p in group),
            "freshrag.embed.completed": done,
        }
        ended = time.time_ns()
        for p in group:
            entry = self._open.get(id(p.event))
            if entry is None:
                continue
            own = {
                "freshrag.ingest.chunks.new": len(p.plan.new),
                "freshrag.ingest.chunks.embedded": p.embedded,
            }
            parent = spans.context_of(entry[1])
            spans.start("ingest.embed", parent, {**own, **shared}, start_ns=started_ns).end(ended)

    def done(self, outcome: Outcome) -> None:
        """The event's outcome is written (or decided): its span ends with it."""
        entry = self._open.get(id(outcome.event))
        if entry is None or entry[2]:
            return
        event, span, _ = entry
        span.set_attributes(
            {
                "freshrag.ingest.status": outcome.status,
                "freshrag.ingest.chunks.new": outcome.new,
                "freshrag.ingest.chunks.kept": outcome.kept,
                "freshrag.ingest.chunks.removed": outcome.removed,
                "freshrag.ingest.chunks.embedded": outcome.embedded,
            }
        )
        if outcome.status == "failed":  # the reason goes to the dead-letter topic, not here
            span.set_status(Status(StatusCode.ERROR, "the event could not be indexed"))
        span.end()
        self._open[id(event)] = (event, span, True)

    def finish(self) -> None:
        """The batch is over: spans still open end as not applied (their records come
        back, or a newer version of their document was applied instead)."""
        for _, span, ended in self._open.values():
            if not ended:
                span.set_attribute("freshrag.ingest.status", "not applied")
                span.end()
        self._open.clear()


def _ids(event: DocumentEvent) -> dict[str, spans.AttributeValue]:
    return {
        "freshrag.doc_id": event.doc_id,
        "freshrag.version": event.version,
        "freshrag.tenant": event.tenant,
        "freshrag.op": event.op,
    }


@contextmanager
def _stage(name: str, parent: Span, attributes: spans.Attributes | None) -> Iterator[Span]:
    s = spans.start(name, spans.context_of(parent), attributes)
    try:
        yield s
    except BaseException as exc:
        s.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        s.end()


def describe_parse(span: Span, event: DocumentEvent, doc: object, reused: bool) -> None:
    """An `ingest.parse` span's attributes (the parse ran in a parser child; the span is
    the worker's wait for it, short when the parse ran ahead)."""
    if not span.is_recording():
        return
    chunks = getattr(doc, "chunks", None)
    attributes: dict[str, spans.AttributeValue] = {"freshrag.mime": event.mime}
    if reused:
        attributes["freshrag.parse.reused"] = True  # parsed by an earlier try of the batch
    if chunks is None:
        span.set_status(Status(StatusCode.ERROR, "unsupported document"))
    else:
        attributes["freshrag.ingest.chunks"] = len(chunks)
    span.set_attributes(attributes)


def describe_plan(span: Span, new: int, kept: int, removed: int) -> None:
    """An `ingest.diff` span's attributes: which chunks are new, kept or gone."""
    if span.is_recording():
        span.set_attributes(
            {
                "freshrag.ingest.chunks.new": new,
                "freshrag.ingest.chunks.kept": kept,
                "freshrag.ingest.chunks.removed": removed,
            }
        )
