"""Trace spans for every layer, on the OpenTelemetry API alone: no SDK, no exporter here.

Off until the composition root installs a tracer provider (freshrag/telemetry.py, when an
OTLP endpoint is configured). While off, `span()` hands back one shared no-op context
whose span is the API's invalid span: /retrieve's hot path pays a global read and a call,
and allocates nothing. Call sites that compute attributes check `span.is_recording()`
first, so they skip that work too.

Nothing here records content: callers pass ids, versions, counts and outcomes, never a
query, a prompt, an answer or a document's text.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

Attributes = Mapping[str, AttributeValue]

SCOPE = "freshrag"
# Kafka records carry the W3C trace context only (no baggage: a caller's, up to 8 kB, would
# ride in every event), and a `tracestate` only this short, so the headers stay well inside
# the bytes api/publishing.py keeps free below FRESHRAG_MAX_EVENT_BYTES.
_W3C = TraceContextTextMapPropagator()
MAX_TRACESTATE = 128
_OFF: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)
_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def install(provider: TracerProvider) -> None:
    """Turn spans on, made by `provider` (the composition root's, see freshrag/telemetry.py)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(SCOPE)


def uninstall() -> None:
    """Back to no-op spans (at shutdown, and between tests)."""
    global _tracer, _provider
    _tracer = _provider = None


def enabled() -> bool:
    return _tracer is not None


def provider() -> TracerProvider | None:
    """The installed provider (the HTTP layer hands it to FastAPI's own request spans)."""
    return _provider


def span(
    name: str, attributes: Attributes | None = None, kind: SpanKind = SpanKind.INTERNAL
) -> AbstractContextManager[Span]:
    """A child of the current span, current itself inside the `with`; an exception leaving
    it is recorded and marks it failed. Off: the shared no-op."""
    tracer = _tracer
    if tracer is None:
        return _OFF
    return tracer.start_as_current_span(name, attributes=attributes, kind=kind)


def start(
    name: str,
    parent: Context | None = None,
    attributes: Attributes | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    start_ns: int | None = None,
    links: Sequence[trace.Link] = (),
) -> Span:
    """A span under `parent` (the current context if None) that is not made current: for
    work that is not one block of one thread (an ingest event, from decode to write).
    The caller ends it. Off: the invalid span (ending it does nothing)."""
    tracer = _tracer
    if tracer is None:
        return INVALID_SPAN
    return tracer.start_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        links=links,
        start_time=start_ns,
        record_exception=False,
    )


def record(
    name: str,
    took_s: float,
    attributes: Attributes | None = None,
    *,
    parent: Context | None = None,
    failed: bool = False,
) -> None:
    """A span for work that just ended, after `took_s` seconds, known only once it is over
    (a provider call, from its usage record). Off: nothing."""
    if _tracer is None:
        return
    end = time.time_ns()
    s = start(name, parent, attributes, start_ns=end - int(took_s * 1e9))
    if failed:
        s.set_status(Status(StatusCode.ERROR))
    s.end(end)


def event(name: str, attributes: Attributes | None = None) -> None:
    """An event on the current span (a provider passed over). Off: nothing."""
    if _tracer is not None:
        trace.get_current_span().add_event(name, attributes)


def context_of(s: Span) -> Context | None:
    """A context whose current span is `s`, to parent other spans on; None for the no-op."""
    if not s.get_span_context().is_valid:
        return None
    return trace.set_span_in_context(s)


def kafka_headers() -> list[tuple[str, bytes]] | None:
    """The current span's W3C `traceparent` (and a short `tracestate`) as Kafka record
    headers; None when no span is active. Not tied to `enabled()`: an application that
    publishes with ingest.publisher inside its own trace hands that trace on too."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    state = carrier.get("tracestate", "")
    if len(state) > MAX_TRACESTATE:
        del carrier["tracestate"]
    return [(k, v.encode()) for k, v in carrier.items()] or None


def from_kafka_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> Context | None:
    """The caller's trace context carried by a record's headers, None if it carries none."""
    if not headers:
        return None
    carrier = {k.lower(): v.decode("latin-1") for k, v in headers if v is not None}
    if "traceparent" not in carrier:
        return None
    return _W3C.extract(carrier)
