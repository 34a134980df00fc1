"""Request spans: FastAPI's own OpenTelemetry support, given FreshRAG's tracer provider.

FastAPI (0.165+) opens a server span per request itself, as the child of the W3C
`traceparent` the caller sent (the global propagator: tracecontext and baggage unless
OTEL_PROPAGATORS says otherwise), and skips all of it while no provider is configured.
So no middleware is added: with tracing off a request costs what it cost before; with it
on, the stage spans (auth, encode, search, rank, providers, cache) nest under FastAPI's
server span, in the event loop and in the lanes' threads alike (anyio copies the context).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig

from freshrag import spans

# Probes and scrapes, every few seconds: a trace each would bury the requests worth seeing.
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


def telemetry_config() -> TelemetryConfig | None:
    """FastAPI's telemetry options for a new app: None (FastAPI's defaults) unless this
    process traces (freshrag/telemetry.py)."""
    provider = spans.provider()
    if provider is None:
        return None
    return {
        "tracer_provider": provider,
        # One span per request and the stages inside it; FastAPI's own dependency,
        # endpoint and serialization spans would double the count for little.
        "operation_spans": False,
        # Our exporter is the only one: FASTAPI_OTEL_AUTO_CONFIGURE must not add a second.
        "auto_configure": False,
        "exclude": _untraced,
    }


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED
