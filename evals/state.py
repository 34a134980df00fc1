"""The index's state as the service reports it: GET /readyz (and any details it carries) and
the Prometheus counters on GET /metrics. Whatever the service does not expose is None
("n/a" in the report), never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx

from evals.client import ServiceClient, ServiceUnreachable

# Names a service may use, first match wins: readyz detail keys, then metric names.
_READY_KEYS = {
    "documents": ("documents", "document_count", "docs"),
    "chunks": ("chunks", "chunk_count", "points"),
    "backlog": ("backlog", "consumer_backlog", "consumer_lag", "lag"),
    "last_indexed_at": ("last_indexed_at", "last_indexed", "indexed_at"),
    "dead_letters": ("dead_letters", "dlq"),
}
_METRICS = {
    "documents": ("freshrag_index_documents", "freshrag_documents", "freshrag_indexed_documents"),
    "chunks": ("freshrag_index_chunks", "freshrag_chunks", "freshrag_indexed_chunks"),
    "backlog": (
        "freshrag_ingest_backlog",
        "freshrag_consumer_backlog",
        "freshrag_ingest_consumer_lag",
        "freshrag_consumer_lag",
        "freshrag_ingest_lag",
    ),
    "last_indexed_at": (
        "freshrag_ingest_last_indexed_timestamp_seconds",
        "freshrag_last_indexed_timestamp_seconds",
        "freshrag_ingest_last_indexed_timestamp",
        "freshrag_ingest_last_success_timestamp_seconds",
    ),
}


def _flatten(body: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(body, dict):
        return {}
    out: dict[str, Any] = {}
    for k, v in body.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flatten(v, key + ".")
        else:
            out[key] = v
    return out


def _from_ready(flat: dict[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        for key, value in flat.items():
            if (
                key.rsplit(".", 1)[-1] == name
                and not key.startswith("checks.")
                and value is not None
            ):
                return value
    return None


def _sum(samples: list[tuple[str, dict[str, str], float]], names: Iterable[str]) -> float | None:
    for name in names:
        values = [v for n, _, v in samples if n == name]
        if values:
            return sum(values)
    return None


def _by_label(
    samples: list[tuple[str, dict[str, str], float]], name: str, label: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for n, labels, v in samples:
        if n == name:
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + v
    return out


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        if value <= 0:
            return None
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def index_state(client: ServiceClient) -> dict[str, Any]:
    """Documents, chunks, dead letters, consumer backlog and last indexed, where exposed."""
    state: dict[str, Any] = {"ready": None, "checks": {}, "sources": []}
    try:
        ready = client.readiness()
        state["ready"] = bool(ready.get("ready"))
        state["checks"] = ready.get("checks") or {}
        state["sources"].append("/readyz")
    except ServiceUnreachable:
        ready = {}
    try:
        samples = client.metric_samples()
        state["sources"].append("/metrics")
    except (httpx.HTTPError, ValueError):
        samples = []
    flat = _flatten({k: v for k, v in ready.items() if k not in ("ready", "checks")})
    for key in ("documents", "chunks", "backlog", "last_indexed_at"):
        value = _from_ready(flat, _READY_KEYS[key])
        if value is None:
            value = _sum(samples, _METRICS[key])
        state[key] = value
    state["last_indexed_at"] = _iso(state["last_indexed_at"])
    dlq = _by_label(samples, "freshrag_ingest_dlq_total", "stage")
    from_ready = _from_ready(flat, _READY_KEYS["dead_letters"])
    state["dead_letters"] = (
        from_ready if from_ready is not None else (sum(dlq.values()) if samples else None)
    )
    state["dead_letters_by_stage"] = dlq
    state["events"] = _by_label(samples, "freshrag_ingest_events_total", "outcome")
    state["chunks_written"] = _by_label(samples, "freshrag_ingest_chunks_total", "kind")
    lost_detail = _from_ready(flat, ("broker_state_lost",))
    lost = _sum(samples, ("freshrag_broker_state_lost",))
    state["broker_state_lost"] = lost_detail or (bool(lost) if lost is not None else None)
    return state


def state_notes(state: dict[str, Any]) -> list[str]:
    """What the owner must hear about the index even when every check passes."""
    notes = []
    if state.get("ready") is False:
        failing = [k for k, ok in (state.get("checks") or {}).items() if not ok]
        notes.append(f"the service was not ready at the end of the run ({', '.join(failing)})")
    lost = state.get("broker_state_lost")
    if lost:
        notes.append(lost if isinstance(lost, str) else "the broker lost committed offsets")
    return notes
