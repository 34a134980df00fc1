"""Prometheus metrics of the write path (exposed by the API's /metrics)."""

from prometheus_client import Counter, Histogram

EVENTS = Counter("freshrag_ingest_events_total", "Document events handled", ["outcome"])
CHUNKS = Counter("freshrag_ingest_chunks_total", "Chunks written", ["kind"])
DLQ = Counter("freshrag_ingest_dlq_total", "Messages sent to the dead-letter topic")
BATCH_SECONDS = Histogram("freshrag_ingest_batch_seconds", "Time to apply one polled batch")
RETRIES = Counter("freshrag_ingest_retries_total", "Batch retries after transient index errors")
