"""Tracing setup for a FreshRAG process (`up`, `serve`, `worker`): OpenTelemetry's SDK with
an OTLP/HTTP (protobuf) exporter behind a batch span processor, or nothing at all.

On only when an endpoint is configured, in OpenTelemetry's own variables:
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as given) or `OTEL_EXPORTER_OTLP_ENDPOINT`
(`/v1/traces` appended). Without one, nothing of the SDK is imported, no exporter or
thread exists and every span in freshrag/spans.py is the shared no-op. The SDK reads the
rest of its standard variables itself: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` (+ `_ARG`), `OTEL_EXPORTER_OTLP_HEADERS` (+ `_TRACES_`),
`OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_COMPRESSION`, `OTEL_BSP_*`, and
`OTEL_SDK_DISABLED=true` / `OTEL_TRACES_EXPORTER=none` turn it all off.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from opentelemetry import trace

from freshrag import spans

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("freshrag.telemetry")

DEFAULT_SERVICE_NAME = "freshrag"


def endpoint_from(env: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL `env` configures, or None: tracing stays off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return None
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces  # the signal's own URL, used as given (the OTLP exporter spec)
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return f"{base.rstrip('/')}/v1/traces" if base else None


@dataclass
class Tracing:
    """The process's tracer provider and its one exporter, shut down once."""

    provider: TracerProvider
    endpoint: str
    _done: bool = False

    def flush(self, timeout_ms: int = 10_000) -> bool:
        """Export every ended span now (tests; a process about to stop)."""
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Spans off, the batch flushed, the exporter closed. Idempotent (atexit calls it)."""
        with _lock:
            if self._done:
                return
            self._done = True
            global _active
            if _active is self:
                _active = None
                spans.uninstall()
        self.provider.shutdown()


_lock = threading.Lock()
_active: Tracing | None = None


def configure(
    endpoint: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    register_global: bool = True,
) -> Tracing | None:
    """Start tracing to `endpoint` (else the one `env`, default `os.environ`, configures);
    None, and nothing started, when there is none. Called once at a process's start; a
    second call returns the first one's tracing.

    `register_global` also makes the provider OpenTelemetry's global one, so the libraries
    that trace on their own (the Anthropic SDK's call spans) join the same traces; tests
    leave it off, since a process's global provider cannot be replaced.
    """
    global _active
    env = os.environ if env is None else env
    url = endpoint or endpoint_from(env)
    with _lock:
        if _active is not None:
            return _active
        if not url:
            return None
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        ) or "http/protobuf"
        if protocol != "http/protobuf":
            log.warning(
                "traces go over OTLP/HTTP with protobuf; OTEL_EXPORTER_OTLP_PROTOCOL=%s is "
                "not supported (point the endpoint at the collector's HTTP port, 4318)",
                protocol,
            )
        _active = Tracing(_provider(url), url)
        spans.install(_active.provider)
    if register_global:
        trace.set_tracer_provider(_active.provider)
    atexit.register(_active.shutdown)
    log.info("tracing: spans exported over OTLP/HTTP to %s", url)
    return _active


def active() -> Tracing | None:
    return _active


def _provider(url: str) -> TracerProvider:
    # Imported here: a process that does not trace never loads the SDK.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_VERSION: _version()})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES named the service.
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


def _version() -> str:
    try:
        return metadata.version("freshrag")
    except metadata.PackageNotFoundError:
        return "unknown"
