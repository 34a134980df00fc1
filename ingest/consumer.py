"""The ingest worker: a Kafka consumer-group member that applies document events to the index.

Loop: poll a batch → decode (malformed → DLQ) → keep the newest event per document →
apply (unparseable → DLQ) → flush the DLQ → commit offsets. Offsets are committed only
after the index confirmed every write (at-least-once); a transient index error retries
the batch with backoff and commits nothing meanwhile. `stop()` (SIGTERM) lets the batch
in hand finish, then the loop exits and leaves the group.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_exponential

from ingest import metrics
from ingest.changes import newest_per_document
from ingest.events import DocumentEvent, MalformedEvent, decode_event
from ingest.indexer import Indexer, Outcome
from retrieval.settings import Settings

log = logging.getLogger("freshrag.worker")


def dead_letter(record, reason: str, stage: str) -> bytes:  # noqa: ANN001 - a ConsumerRecord
    """The DLQ value: why, where it came from, and the original payload, losslessly."""
    value: bytes = record.value or b""
    body = {
        "reason": reason,
        "stage": stage,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key.decode("utf-8", "replace") if record.key else None,
        "failed_at": datetime.now(UTC).isoformat(),
    }
    try:
        body["payload"] = value.decode("utf-8")
    except UnicodeDecodeError:
        body["payload_base64"] = base64.b64encode(value).decode()
    return json.dumps(body).encode()


class IngestWorker:
    def __init__(
        self,
        settings: Settings,
        indexer: Indexer,
        *,
        client_id: str = "freshrag-worker",
        on_batch: Callable[[list[Outcome]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.indexer = indexer
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{client_id}-apply")
        self.batches = 0
        servers = settings.kafka_bootstrap_servers.split(",")
        self.consumer = KafkaConsumer(
            settings.topic,
            bootstrap_servers=servers,
            group_id=settings.consumer_group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.poll_max_records,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(settings.kafka_session_timeout_ms // 3, 300),
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        )
        self.producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)

    # --- control -----------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        log.info("worker joined group %s on %s", self.settings.consumer_group, self.settings.topic)
        try:
            while not self._stop.is_set():
                self.run_once()
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.producer.flush(timeout=10)
            self.producer.close(timeout=10)
        finally:
            self.consumer.close()
            self._pool.shutdown(wait=True)
        log.info("worker stopped")

    # --- one batch ---------------------------------------------------------------------

    def run_once(self) -> int:
        polled = self.consumer.poll(
            timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.poll_max_records
        )
        records = [r for batch in polled.values() for r in batch]
        if not records:
            return 0
        started = time.perf_counter()
        retrying = Retrying(
            wait=wait_exponential(multiplier=0.2, max=10),
            retry=retry_if_exception_type(Exception),
            stop=lambda _state: self._stop.is_set(),
            before_sleep=self._log_retry,
            reraise=False,
        )
        future = self._pool.submit(retrying, self._handle, records)
        self._stay_in_group_until(future)
        try:
            outcomes = future.result()
        except RetryError:
            log.warning(
                "stopping with a batch of %d events uncommitted (redelivered later)", len(records)
            )
            return 0
        try:
            self.consumer.commit()
        except CommitFailedError as exc:  # group rebalanced: the new owner re-applies, idempotently
            log.warning("commit failed after rebalance, batch will be redelivered: %s", exc)
        self.batches += 1
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        if self.on_batch:
            self.on_batch(outcomes)
        return len(records)

    def _stay_in_group_until(self, future: Future) -> None:
        """Keep polling (partitions paused) while the batch is applied in another thread.

        A big document can take longer than max_poll_interval to parse and embed; without
        polling, the group would evict this worker mid-batch and hand the partitions to
        another one. Records that a rebalance lets through meanwhile are rewound.
        """
        self.consumer.pause(*self.consumer.assignment())
        try:
            while not future.done():
                stray = self.consumer.poll(timeout_ms=100)
                for tp, batch in stray.items():
                    self.consumer.seek(tp, batch[0].offset)
                self.consumer.pause(*self.consumer.assignment())
        finally:
            self.consumer.resume(*self.consumer.paused())

    def _handle(self, records: list) -> list[Outcome]:
        decoded: list[tuple[DocumentEvent, object]] = []
        for record in records:
            try:
                decoded.append((decode_event(record.value), record))
            except MalformedEvent as exc:
                self._to_dlq(record, str(exc), "decode")
        winners = newest_per_document(decoded)
        source = {id(event): record for event, record in winners}
        outcomes = self.indexer.apply([event for event, _ in winners])
        for outcome in outcomes:
            if outcome.status == "failed":
                self._to_dlq(source[id(outcome.event)], outcome.reason or "failed", "parse")
            else:
                log.debug(
                    "%s %s v%s: %s",
                    outcome.status,
                    outcome.event.doc_id,
                    outcome.event.version,
                    outcome,
                )
        self.producer.flush(timeout=30)
        return outcomes

    def _to_dlq(self, record, reason: str, stage: str) -> None:  # noqa: ANN001
        log.warning(
            "dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason
        )
        self.producer.send(
            self.settings.dlq_topic,
            key=record.key,
            value=dead_letter(record, reason, stage),
            headers=[("freshrag-reason", reason.encode()[:1000])],
        )
        metrics.DLQ.inc()

    @staticmethod
    def _log_retry(state) -> None:  # noqa: ANN001
        metrics.RETRIES.inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning("batch failed (%s), retry %d", exc, state.attempt_number)


def ensure_topics(settings: Settings) -> None:
    """Create the events and dead-letter topics when missing (idempotent)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(settings.topic, settings.topic_partitions, 1),
            NewTopic(settings.dlq_topic, 1, 1),
        ]
        missing = [t for t in wanted if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    except KafkaError as exc:
        raise RuntimeError(
            f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}"
        ) from exc
    finally:
        admin.close()
