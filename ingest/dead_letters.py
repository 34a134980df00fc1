"""The dead-letter topic: each event that cannot be indexed, with why and where it was.

A dead letter is confirmed by the broker before the worker commits past its event, so
nothing is lost: either the event is indexed, or it waits on the DLQ with its reason.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError

from ingest.broker import Outage

log = logging.getLogger("freshrag.worker")

# Room for the dead-letter envelope around the original payload.
ENVELOPE_BYTES = 1_000_000
_TRUNCATED_PAYLOAD_CHARS = 64_000


def dead_letter(record, reason: str, stage: str, truncate: bool = False) -> bytes:  # noqa: ANN001
    """The DLQ value: why, where it came from, and the original payload.

    `truncate` keeps the first 64k characters plus the size and SHA-256 of the whole
    payload, for a record the broker will not take whole; the original stays on its
    topic at the offset given.
    """
    value: bytes = record.value or b""
    body = {
        "reason": reason,
        "stage": stage,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key.decode("utf-8", "replace") if record.key else None,
        "failed_at": datetime.now(UTC).isoformat(),
        "payload_bytes": len(value),
    }
    if truncate:
        body["payload_sha256"] = hashlib.sha256(value).hexdigest()
        body["payload_truncated"] = True
        body["payload"] = value[:_TRUNCATED_PAYLOAD_CHARS].decode("utf-8", "replace")
        return json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")
    try:
        body["payload"] = value.decode("utf-8")
    except UnicodeDecodeError:
        body["payload_base64"] = base64.b64encode(value).decode()
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")


class DeadLetters:
    """Sends dead letters to `topic` and waits for the broker's confirmation of each."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic

    def send(self, dead: list[tuple[object, str, str]]) -> None:
        """Send every dead letter and wait for the broker to confirm each one."""
        if not dead:
            return
        pending = [
            (record, reason, stage, self._send_one(record, reason, stage))
            for record, reason, stage in dead
        ]
        for record, reason, stage, future in pending:
            try:
                future.get(timeout=30)
            except MessageSizeTooLargeError:
                self._send_one(record, reason, stage, truncate=True).get(timeout=30)
            except KafkaError as exc:
                raise Outage(f"dead letter not confirmed by the broker: {exc}") from exc

    def _send_one(self, record, reason: str, stage: str, truncate: bool = False):  # noqa: ANN001, ANN202
        log.warning(
            "dead-lettering %s[%d]@%d (%s): %s",
            record.topic,
            record.partition,
            record.offset,
            stage,
            reason,
        )
        kwargs = dict(
            key=record.key,
            headers=[
                ("freshrag-reason", reason.encode("utf-8", "replace")[:1000]),
                ("freshrag-stage", stage.encode()),
            ],
        )
        try:
            return self.producer.send(
                self.topic,
                value=dead_letter(record, reason, stage, truncate),
                **kwargs,
            )
        except MessageSizeTooLargeError:
            if truncate:
                raise
            return self.producer.send(
                self.topic, value=dead_letter(record, reason, stage, True), **kwargs
            )
