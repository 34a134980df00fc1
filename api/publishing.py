"""The app's one Kafka producer, for POST and DELETE /documents.

Created on the first publish (a server that never publishes never connects) and closed
when the app shuts down. kafka-python's producer is thread-safe: requests send from the
thread pool at once, and each waits only for its own records' acknowledgements (acks=all),
never longer than `timeout_s`. A broker that cannot be reached, or does not confirm in
time, is a BrokerUnreachable naming it: the route answers 503, never a silent loss.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError
from opentelemetry.trace import SpanKind

from freshrag import spans
from ingest.publisher import BrokerUnreachable, _timeouts, check_broker

# Record overhead a producer adds to key + value (batch and record headers), kept free
# below FRESHRAG_MAX_EVENT_BYTES so an event that passes the check is never refused later.
RECORD_OVERHEAD_BYTES = 512


class EventProducer:
    """Sends records and waits until the broker acknowledged every one of them."""

    def __init__(
        self,
        bootstrap_servers: str,
        max_event_bytes: int,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.max_event_bytes = max_event_bytes
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    @property
    def max_record_bytes(self) -> int:
        """The largest key + value this producer sends."""
        return self.max_event_bytes - RECORD_OVERHEAD_BYTES

    def _kafka(self) -> KafkaProducer:
        with self._lock:  # one connects; the others wait for it instead of connecting too
            if self._producer is None:
                try:
                    check_broker(self.bootstrap_servers, self.connect_timeout_s)
                except BrokerUnreachable as exc:
                    raise BrokerUnreachable(f"{exc}; nothing was published") from exc
                try:
                    self._producer = KafkaProducer(
                        bootstrap_servers=self.bootstrap_servers.split(","),
                        acks="all",
                        # Not idempotent: the embedded broker (Tansu) stores an idempotent batch in three
                        # writes, and a retry after a crash between them is acked as a duplicate though
                        # nothing was stored. A retry may duplicate a record instead; versions make that
                        # harmless (docs/how-to/deploy.md).
                        enable_idempotence=False,
                        linger_ms=5,
                        max_request_size=self.max_event_bytes,
                        **_timeouts(),
                    )
                except KafkaError as exc:
                    raise BrokerUnreachable(
                        f"cannot talk to the Kafka broker at {self.bootstrap_servers}: {exc}; "
                        "nothing was published"
                    ) from exc
            return self._producer

    def send(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        """(partition, offset) of each (key, value), once the broker acknowledged them all.

        Blocking: call it from a thread. Raises BrokerUnreachable when the broker cannot be
        reached or does not confirm every record within `timeout_s`; then some records may
        have been written, and sending them again is harmless (a version not newer than the
        indexed one is ignored).
        """
        producer = self._kafka()
        deadline = time.monotonic() + self.timeout_s
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": len(records),
        }
        try:
            # Each record carries this span's `traceparent`: the worker continues the trace.
            with spans.span("publish", attributes, SpanKind.PRODUCER):
                headers = spans.kafka_headers()
                futures = [
                    producer.send(topic, key=key, value=value, headers=headers)
                    for key, value in records
                ]
                acked = []
                for future in futures:
                    meta = future.get(timeout=max(0.0, deadline - time.monotonic()))
                    acked.append((meta.partition, meta.offset))
        except KafkaError as exc:
            raise BrokerUnreachable(
                f"the Kafka broker at {self.bootstrap_servers} did not confirm the events on "
                f"{topic} within {self.timeout_s:g} s ({type(exc).__name__}: {exc}); some may "
                "have been written: sending them again is safe"
            ) from exc
        return acked

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and close the producer (a later send would open a new one)."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError):
                producer.close(timeout=timeout_s)
