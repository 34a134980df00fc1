"""The ingest worker: a Kafka consumer-group member that applies document events to the index.

Loop: poll → pick a batch (live events first; else a few backfill events) → decode
(malformed → DLQ) → keep the newest event per document → apply one document at a time
(each searchable once written; a document that cannot be indexed → DLQ) → confirm the
dead letters → commit, per partition, up to the last record whose document is written.
Offsets are committed only after the index confirmed every write and the broker every
dead letter (at-least-once; writes are idempotent, so redelivery changes nothing).

Two lanes: live and bulk. The live lane is the live topic's small events; the bulk lane
is the backfill topic plus live events over `long_document_bytes` (a 100-page manual
published among one-line edits). Bulk events are taken `backfill_batch` at a time,
round-robin over partitions, only when no live event waits; a bulk batch parses in its
own child process and embeds in slices, and stops between slices (or while its parse
runs) when a live event arrives, so it never holds a live edit for more than one slice.
Offsets never pass an event still waiting in the bulk lane.

Failures are told apart. An index or broker outage retries the whole batch with backoff
for as long as it lasts, committing nothing. Any other error is treated as a possibly
poisoned batch: after `document_retries` more tries the events are applied one by one,
and the one that keeps failing while the index is healthy is dead-lettered, so a single
bad event can never stall its partition. `stop()` (SIGTERM) lets the batch in hand
finish or stops it between documents (what is written is committed, the rest is left
uncommitted), and after `shutdown_timeout_s / 2` kills the child processes of a call that
would not end; then the loop exits and leaves the group.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_exponential

from freshrag.settings import Settings
from ingest import metrics
from ingest.broker import Outage, close_consumer, unstick_parked_partitions
from ingest.changes import newest_per_document
from ingest.dead_letters import ENVELOPE_BYTES, DeadLetters
from ingest.events import DocumentEvent, MalformedEvent, decode_event
from ingest.indexer import Indexer, Outcome
from ingest.lanes import commit_offsets, record_partition, take_bulk
from ingest.ledger import OffsetLedger, lost_offsets

log = logging.getLogger("freshrag.worker")


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome]
    dead: list[tuple[object, str, str]] = field(default_factory=list)  # (record, reason, stage)
    unprocessed: list = field(default_factory=list)  # records left for later (interrupted)


def _key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


class IngestWorker:
    def __init__(
        self,
        settings: Settings,
        indexer: Indexer,
        *,
        client_id: str = "freshrag-worker",
        on_batch: Callable[[list[Outcome]], None] | None = None,
        ledger: OffsetLedger | None = None,
    ) -> None:
        self.settings = settings
        self.indexer = indexer
        self.on_batch = on_batch
        self._stop = threading.Event()
        self._kill_at: float | None = None  # when stopping: children killed after this
        self._closed = threading.Event()
        self.ready = threading.Event()  # warmed up and in the group: the first edit is quick
        self._live_waiting = threading.Event()  # a live event arrived during a backfill batch
        self._stash: list = []  # those live records, applied next
        self._backlog: list = []  # bulk records polled, not yet applied (in offset order)
        self._applied: dict[TopicPartition, int] = {}  # per partition: offset + 1 applied
        self._last_bulk = time.monotonic()  # when the bulk lane last had a turn
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{client_id}-apply")
        self.batches = 0
        self.broker_state_lost: str | None = None
        self.committed: dict[TopicPartition, int] = {}
        self.lag: dict[str, int] = {}
        self.last_indexed_at: float | None = None
        self.ledger = ledger or OffsetLedger(
            settings.data_dir / "ingest" / f"{settings.consumer_group}.{settings.topic}.json"
        )
        servers = settings.kafka_bootstrap_servers.split(",")
        self.consumer = KafkaConsumer(
            settings.topic,
            settings.backfill_topic,
            bootstrap_servers=servers,
            group_id=settings.consumer_group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.poll_max_records,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(settings.kafka_session_timeout_ms // 3, 300),
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
            fetch_max_bytes=max(52_428_800, settings.max_event_bytes),
            max_partition_fetch_bytes=max(1_048_576, settings.max_event_bytes),
        )
        self.producer = KafkaProducer(
            bootstrap_servers=servers,
            acks="all",
            # Not idempotent: the embedded broker (Tansu) stores an idempotent batch in three
            # writes, and a retry after a crash between them is acked as a duplicate though
            # nothing was stored. A retry may duplicate a record instead; versions make that
            # harmless (docs/how-to/deploy.md).
            enable_idempotence=False,
            linger_ms=5,
            max_request_size=settings.max_event_bytes + ENVELOPE_BYTES,
        )
        self.dead_letters = DeadLetters(self.producer, settings.dlq_topic)

    # --- control -----------------------------------------------------------------------

    def stop(self) -> None:
        """Finish or interrupt the batch in hand; its child processes are killed if their
        call has not ended within half of `shutdown_timeout_s`."""
        if self._kill_at is None:
            grace = self.settings.shutdown_timeout_s / 2
            self._kill_at = time.monotonic() + grace
            timer = threading.Timer(grace, self._kill_children)
            timer.daemon = True
            timer.start()
        self._stop.set()

    def _kill_children(self) -> None:
        """The batch in hand (or the warm-up) outlived its grace: kill what it waits on;
        it then fails with `Stopped` and stays uncommitted."""
        if self._closed.is_set():
            return
        killed = self.indexer.processor.close(0)
        if killed:
            log.warning(
                "stopping: the work in hand did not end within the shutdown timeout; killed "
                "%d ingest child process(es), the batch in hand stays uncommitted",
                killed,
            )

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        log.info("worker joined group %s on %s", self.settings.consumer_group, self.settings.topic)
        try:
            self.check_broker_state()
            self.indexer.warm_up()
            self._join_group()
            self.ready.set()
            while not self._stop.is_set():
                self.run_once()
        except Exception as exc:
            if not self._stop.is_set():
                raise
            log.info("worker stopped mid-way (%s); nothing uncommitted is lost", exc)
        finally:
            self.close()

    def _join_group(self) -> None:
        """Poll until the group assigns partitions, so a first event is not held by the
        join (a rebalance can take seconds); records polled meanwhile are rewound."""
        deadline = time.monotonic() + self.settings.kafka_max_poll_interval_ms / 1000
        while not self.consumer.assignment() and not self._stop.is_set():
            polled = self.consumer.poll(timeout_ms=100, max_records=1)
            for tp, batch in polled.items():
                self.consumer.seek(tp, batch[0].offset)
            if time.monotonic() > deadline:
                log.warning("no partitions assigned yet; going on (another member has them?)")
                return

    def close(self) -> None:
        try:
            self.producer.flush(timeout=10)
            self.producer.close(timeout=10)
        finally:
            close_consumer(self.consumer)
            self._pool.shutdown(wait=True)
            killed = self.indexer.processor.close(self._time_left())
            self._closed.set()
            if killed:
                log.warning("killed %d ingest child process(es) at the shutdown timeout", killed)
            for key in self.lag:  # a dropped generation's group must not report a stale lag
                topic, partition = key.rsplit(":", 1)
                with contextlib.suppress(KeyError):
                    metrics.LAG.remove(self.settings.consumer_group, topic, partition)
        log.info("worker stopped")

    # --- what the broker forgot ---------------------------------------------------------

    def check_broker_state(self) -> str | None:
        """Compare the offsets this worker recorded with the broker's; report a loss loudly."""
        recorded = self.ledger.read()
        if not recorded:
            return None
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in (self.settings.topic, self.settings.backfill_topic)
                for p in sorted(self.consumer.partitions_for_topic(topic) or ())
            ]
            committed = {_key(tp): self.consumer.committed(tp) for tp in tps}
            ends = {_key(tp): o for tp, o in self.consumer.end_offsets(tps).items()}
        except KafkaError as exc:
            log.warning("could not compare committed offsets with the broker: %s", exc)
            return None
        problems = lost_offsets(recorded, committed, ends)
        if not problems:
            return None
        self.broker_state_lost = (
            "the broker lost this group's committed offsets (a "
            "memory-only broker restarted?): events published before the restart and not yet "
            "indexed, and the dead-letter topic, are gone; republish what was in flight. "
            + "; ".join(problems)
        )
        log.error(self.broker_state_lost)
        metrics.BROKER_STATE_LOST.set(1)
        self.ledger.forget()
        return self.broker_state_lost

    # --- one batch ---------------------------------------------------------------------

    def run_once(self) -> int:
        assigned = self.consumer.assignment()
        self._backlog = [
            r for r in self._backlog if record_partition(r) in assigned
        ]  # drop revoked ones
        self._applied = {tp: o for tp, o in self._applied.items() if tp in assigned}
        held = bool(self._stash)
        if held:  # live events that arrived during the last bulk turn: they go now
            records, self._stash = self._stash, []
        else:
            # While backfill records wait in memory, fetch only live ones (no seeks needed).
            bulk_tps = [tp for tp in assigned if tp.topic == self.settings.backfill_topic]
            if self._backlog:
                self.consumer.pause(*bulk_tps)
            unstick_parked_partitions(self.consumer)
            try:
                polled = self.consumer.poll(
                    timeout_ms=0 if self._backlog else self.settings.poll_timeout_ms,
                    max_records=self.settings.poll_max_records,
                )
            finally:
                if self._backlog:
                    self.consumer.resume(*bulk_tps)
            records = [r for batch in polled.values() for r in batch]
        self._observe_lag()
        live = [r for r in records if not self._bulk(r)]
        self._backlog.extend(r for r in records if self._bulk(r))
        # The bulk lane gets a turn when no live event waits, and at least every
        # `bulk_turn_s` under a stream that never pauses (a turn is one slice or one
        # document before it yields), so a long document or a backfill is never starved.
        bulk_due = time.monotonic() - self._last_bulk >= self.settings.bulk_turn_s
        if self._backlog and not held and (not live or bulk_due):
            batch, self._backlog = take_bulk(
                self._backlog, self.settings.backfill_batch, self.settings.backfill_topic
            )
            self._stash, live = live, []  # applied right after this turn
        elif live:
            batch = live
        else:
            return 0
        started = time.perf_counter()
        self._live_waiting.clear()
        if self._stash:
            self._live_waiting.set()  # live events wait: yield after one step
        future = self._pool.submit(self._apply_until_done, batch, not live)
        self._stay_in_group_until(future, listen_for_live=not live)
        result = future.result()
        if not live:
            # Counted from the turn's end, so live work gets its `bulk_turn_s` between
            # two turns however long a turn's slice took.
            self._last_bulk = time.monotonic()
        if result is None:
            log.warning(
                "stopping with a batch of %d events uncommitted (redelivered later)", len(batch)
            )
            return 0
        self._backlog = result.unprocessed + self._backlog
        self._commit(batch, result.unprocessed)
        metrics.record(result.outcomes)
        for _, _, stage in result.dead:
            metrics.DLQ.labels(stage).inc()
        if any(o.status == "indexed" for o in result.outcomes):
            self.last_indexed_at = time.time()
            metrics.LAST_INDEXED.set(self.last_indexed_at)
        self.batches += 1
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        if self.on_batch:
            self.on_batch(result.outcomes)
        return len(batch) - len(result.unprocessed)

    def _bulk(self, record) -> bool:  # noqa: ANN001
        """A backfill event, or a live one long enough to hold small edits behind it."""
        return record.topic == self.settings.backfill_topic or (
            len(record.value or b"") > self.settings.long_document_bytes
        )

    def _commit(self, batch: list, unprocessed: list) -> None:
        for r in batch:  # what was polled before a held record may already be applied
            self._applied[record_partition(r)] = max(
                self._applied.get(record_partition(r), 0), r.offset + 1
            )
        touched = {record_partition(r) for r in batch}
        offsets = commit_offsets(
            {tp: o for tp, o in self._applied.items() if tp in touched},
            unprocessed + self._backlog + self._stash,
            self.committed,
        )
        if not offsets:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except CommitFailedError as exc:  # rebalanced: the new owner re-applies, idempotently
            log.warning("commit failed after rebalance, batch will be redelivered: %s", exc)
            return
        self.committed.update(offsets)
        self.ledger.record({_key(tp): o for tp, o in offsets.items()})

    def _observe_lag(self) -> None:
        """Consumer lag per partition (log end − committed), kept for /metrics and /readyz.

        Runs on the worker's thread: the Kafka client is not thread-safe, so /readyz only
        reads what this leaves in `self.lag`.
        """
        lag: dict[str, int] = {}
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is None:
                continue
            if tp not in self.committed:
                try:
                    self.committed[tp] = self.consumer.committed(tp) or 0
                except KafkaError:
                    continue
            lag[_key(tp)] = max(0, end - self.committed[tp])
            metrics.LAG.labels(self.settings.consumer_group, tp.topic, str(tp.partition)).set(
                lag[_key(tp)]
            )
        self.lag = lag

    def status(self) -> dict:
        """What /readyz reports about this worker (read from another thread: no Kafka calls)."""
        return {
            "lag": dict(self.lag),
            "last_indexed_at": self.last_indexed_at,
            "broker_state_lost": self.broker_state_lost,
        }

    def _stay_in_group_until(self, future: Future, listen_for_live: bool = False) -> None:
        """Keep polling (partitions paused) while the batch is applied in another thread.

        A big document can take longer than max_poll_interval to parse and embed; without
        polling, the group would evict this worker mid-batch and hand the partitions to
        another one. Records that a rebalance lets through meanwhile are rewound. During
        a backfill batch the live partitions stay open: a live record that arrives is
        kept for the next batch and the backfill batch stops after its current document.
        """
        self.consumer.pause(*self.consumer.assignment())
        if listen_for_live:
            self.consumer.resume(*self._live_partitions())
        try:
            while not future.done():
                unstick_parked_partitions(self.consumer)
                stray = self.consumer.poll(timeout_ms=50 if listen_for_live else 100)
                for tp, batch in stray.items():
                    if listen_for_live and tp.topic != self.settings.backfill_topic:
                        self._stash.extend(batch)
                        self._live_waiting.set()
                    else:
                        self.consumer.seek(tp, batch[0].offset)
                self.consumer.pause(*self.consumer.assignment())
                if listen_for_live and not self._live_waiting.is_set():
                    self.consumer.resume(*self._live_partitions())
        finally:
            self.consumer.resume(*self.consumer.paused())

    def _live_partitions(self) -> list[TopicPartition]:
        return [tp for tp in self.consumer.assignment() if tp.topic != self.settings.backfill_topic]

    # --- applying, with outages told apart from poison --------------------------------

    def _apply_until_done(self, records: list, bulk: bool = False) -> BatchResult | None:
        """The batch's result, or None when stopping before it could be applied."""
        decoded: list[tuple[DocumentEvent, object]] = []
        malformed: list[tuple[object, str, str]] = []
        for record in records:
            try:
                decoded.append((decode_event(record.value), record))
            except MalformedEvent as exc:
                malformed.append((record, str(exc), "decode"))
        self.indexer.traces.begin(decoded)  # a span per event until its write (ingest/tracing.py)
        winners = newest_per_document(decoded)
        failures = tries = 0

        def attempt() -> BatchResult:
            nonlocal failures, tries
            tries += 1
            try:
                if failures > self.settings.document_retries:
                    result = self._apply_one_by_one(winners, malformed)
                else:
                    result = self._apply_batch(winners, malformed, decoded, bulk)
                if tries > 1:  # what an earlier try of this batch wrote counts as indexed
                    for o in result.outcomes:
                        if o.status == "stale" and o.same_version:
                            o.status, o.reason = "indexed", "written by an earlier try"
                return result
            except Exception as exc:
                if not isinstance(exc, Outage) and not self._outage(exc):
                    failures += 1
                raise

        retrying = Retrying(
            wait=wait_exponential(multiplier=0.2, max=10),
            retry=retry_if_exception_type(Exception),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._stop.wait,
            before_sleep=self._log_retry,
        )
        try:
            return retrying(attempt)
        except RetryError:
            return None
        finally:
            self.indexer.traces.finish()  # the events this batch did not apply

    def _apply_batch(
        self,
        winners: list[tuple[DocumentEvent, object]],
        malformed: list[tuple[object, str, str]],
        decoded: list[tuple[DocumentEvent, object]],
        bulk: bool = False,
    ) -> BatchResult:
        source = {id(event): record for event, record in winners}
        outcomes: list[Outcome] = []

        def interrupted() -> bool:
            return self._stop.is_set() or (bulk and self._live_waiting.is_set())

        events = [event for event, _ in winners]
        for outcome in self.indexer.apply_iter(events, interrupted, bulk=bulk):
            outcomes.append(outcome)
        dead = malformed + [
            (source[id(o.event)], o.reason or "failed", "parse")
            for o in outcomes
            if o.status == "failed"
        ]
        self.dead_letters.send(dead)
        done = {(o.event.tenant, o.event.doc_id) for o in outcomes}
        unprocessed = [r for e, r in decoded if (e.tenant, e.doc_id) not in done]
        if unprocessed:
            log.info(
                "%s batch %s after %d of %d documents",
                "bulk" if bulk else "live",
                "stops (shutting down)" if self._stop.is_set() else "yields to live events",
                len(done),
                len(winners),
            )
        return BatchResult(outcomes, dead, unprocessed)

    def _apply_one_by_one(
        self, winners: list[tuple[DocumentEvent, object]], malformed: list[tuple[object, str, str]]
    ) -> BatchResult:
        """Isolate the event that keeps failing while the index is healthy, and dead-letter it."""
        outcomes: list[Outcome] = []
        dead = list(malformed)
        for event, record in winners:
            last: Exception | None = None
            for n in range(self.settings.document_retries + 1):
                try:
                    (outcome,) = self.indexer.apply([event])
                    break
                except Exception as exc:
                    if self._outage(exc):
                        raise Outage(f"index or broker unavailable: {exc}") from exc
                    last = exc
                    if n < self.settings.document_retries:
                        self._stop.wait(0.2 * 2**n)
            else:
                reason = f"could not be written after {self.settings.document_retries + 1} tries: {type(last).__name__}: {last}"
                log.error("dead-lettering %s v%s: %s", event.doc_id, event.version, reason)
                outcome = Outcome(event, "failed", reason)
                dead.append((record, reason, "write"))
                outcomes.append(outcome)
                continue
            if outcome.status == "failed":
                dead.append((record, outcome.reason or "failed", "parse"))
            outcomes.append(outcome)
        self.dead_letters.send(dead)
        return BatchResult(outcomes, dead)

    def _outage(self, exc: BaseException) -> bool:
        """A broker error, or an index that does not answer its health check."""
        if isinstance(exc, KafkaError):
            return True
        try:
            return not self.indexer.index.ping()
        except Exception:
            return True

    def _time_left(self) -> float | None:
        """Seconds until this worker's children must be gone (None: not stopping)."""
        if self._kill_at is None:
            return None
        return max(0.0, self._kill_at - time.monotonic())

    @staticmethod
    def _log_retry(state) -> None:  # noqa: ANN001
        metrics.RETRIES.inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning("batch failed (%s), retry %d", exc, state.attempt_number)
