"""Prometheus metrics of the write path (exposed by the API's /metrics).

Counted once per event, after its batch is committed, never per retry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from ingest.indexer import Outcome

EVENTS = Counter(
    "freshrag_ingest_events_total",
    "Document events handled, by outcome (indexed, deleted, stale, failed)",
    ["outcome"],
)
CHUNKS = Counter(
    "freshrag_ingest_chunks_total",
    "Chunk points per kind: new = embedded + reused_vector (points written with a new id; "
    "embedded were encoded now, reused_vector copied the vector of an identical stored "
    "text); kept = unchanged points whose payload was refreshed; removed = points deleted",
    ["kind"],
)
DLQ = Counter(
    "freshrag_ingest_dlq_total", "Events the broker confirmed on the dead-letter topic", ["stage"]
)
BATCH_SECONDS = Histogram("freshrag_ingest_batch_seconds", "Time to apply one polled batch")
RETRIES = Counter(
    "freshrag_ingest_retries_total", "Batch retries after index, broker or document errors"
)
LAG = Gauge(
    "freshrag_ingest_consumer_lag",
    "Events on a partition not yet committed by this worker (log end − committed offset); "
    "by consumer group, since a blue/green migration runs one group per index generation",
    ["group", "topic", "partition"],
)
LAST_INDEXED = Gauge(
    "freshrag_ingest_last_indexed_timestamp_seconds",
    "Unix time of the last batch that indexed a document",
)
BROKER_STATE_LOST = Gauge(
    "freshrag_broker_state_lost",
    "1 when the broker forgot committed offsets this worker had recorded (memory-only broker "
    "restarted): events published before the restart and not yet indexed are gone",
)


def record(outcomes: Iterable[Outcome]) -> None:
    for o in outcomes:
        EVENTS.labels(o.status).inc()
        if o.status == "indexed":
            CHUNKS.labels("new").inc(o.new)
            CHUNKS.labels("embedded").inc(o.embedded)
            CHUNKS.labels("reused_vector").inc(o.reused)
            CHUNKS.labels("kept").inc(o.kept)
            CHUNKS.labels("removed").inc(o.removed)
