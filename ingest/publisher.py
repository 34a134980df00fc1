"""`freshrag publish`: files and folders become document events on the topic.

Every body travels inside the event: text formats in `content`, PDF and DOCX base64 in
`content_base64`, so publisher and worker need no shared file system (and the worker
need not read files at all). The `source` is the file's URI, for citations.

A publisher probes the brokers with a plain TCP connect before it builds a Kafka client:
an unreachable broker is then one clear error within seconds, not kafka-python's 30 s
bootstrap loop and its pages of connection errors.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import mimetypes
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError
from tqdm import tqdm

from freshrag import spans
from ingest.events import DocumentEvent
from ingest.parser import BINARY_MIMES, SUPPORTED_MIMES, normalize_mime

_EXTRA_TYPES = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".rst": "text/x-rst",
    ".txt": "text/plain",
    ".htm": "text/html",
    ".html": "text/html",
}
# Short enough that a command facing a dead broker gives up within ~10 s in total.
CONNECT_TIMEOUT_S = 3.0
CLIENT_TIMEOUT_MS = 8_000


class BrokerUnreachable(RuntimeError):
    """The brokers cannot be reached or did not confirm the events: one line for the user."""


def guess_mime(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    return normalize_mime(mimetypes.guess_type(path.name)[0] or "application/octet-stream")


def iter_files(
    paths: Iterable[Path], root: Path | None = None, allow_missing: bool = False
) -> Iterator[tuple[Path, Path]]:
    """(file, root) pairs: a folder's files are named relative to that folder (or `root`).

    `allow_missing` lets a path that no longer exists through as a file: a delete event
    for a file that is gone needs only its name.
    """
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts):
                    yield f, root or p
        elif p.is_file() or (allow_missing and not p.exists()):
            yield p, root or p.parent
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")


def default_version() -> int:
    """Milliseconds since the epoch: monotonic enough for a person re-publishing by hand."""
    return time.time_ns() // 1_000_000


def file_event(
    f: Path,
    doc_id: str,
    *,
    op: str = "upsert",
    version: int,
    tenant: str = "default",
    acl: list[str] | None = None,
    mime: str | None = None,
    metadata: dict | None = None,
    data: bytes | None = None,
) -> DocumentEvent:
    """One file's event. `data` is the body already read (sync hashes exactly what it sends)."""
    kind = normalize_mime(mime) if mime else guess_mime(f)
    common = dict(
        op=op,
        doc_id=doc_id,
        version=version,
        tenant=tenant,
        acl=acl or (None if op == "delete" else ["public"]),
        source=f.resolve().as_uri(),
        mime=kind,
        metadata=metadata or {},
    )
    if op == "delete":
        return DocumentEvent(**common)
    body = f.read_bytes() if data is None else data
    if kind in BINARY_MIMES or kind not in SUPPORTED_MIMES:
        # Unsupported types are still sent: the worker dead-letters them with a reason.
        return DocumentEvent(**common, content_base64=base64.b64encode(body).decode())
    return DocumentEvent(**common, content=body.decode("utf-8", errors="replace"))


def build_events(
    paths: Iterable[Path],
    *,
    op: str = "upsert",
    tenant: str = "default",
    acl: list[str] | None = None,
    version: int | None = None,
    mime: str | None = None,
    prefix: str = "",
    metadata: dict | None = None,
    root: Path | None = None,
) -> list[DocumentEvent]:
    version = default_version() if version is None else version
    return [
        file_event(
            f,
            prefix + f.relative_to(base).as_posix(),
            op=op,
            version=version,
            tenant=tenant,
            acl=acl,
            mime=mime,
            metadata=metadata,
        )
        for f, base in iter_files(paths, root, allow_missing=op == "delete")
    ]


def delete_events(
    doc_ids: Iterable[str], *, tenant: str = "default", version: int | None = None
) -> list[DocumentEvent]:
    """Delete events by id: no file needed (it may be long gone)."""
    version = default_version() if version is None else version
    return [DocumentEvent(op="delete", doc_id=d, version=version, tenant=tenant) for d in doc_ids]


def check_broker(bootstrap_servers: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise BrokerUnreachable unless at least one bootstrap server accepts a TCP connection."""
    errors = []
    for server in (s.strip() for s in bootstrap_servers.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError) as exc:
            errors.append(
                f"{server}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
            )
    raise BrokerUnreachable(
        f"cannot reach the Kafka broker at {bootstrap_servers} ({'; '.join(errors) or 'no servers'}); "
        "is it running? (FRESHRAG_KAFKA_BOOTSTRAP_SERVERS)"
    )


def _timeouts() -> dict[str, int]:
    """Bounded waits for kafka-python 2.x and 3.x alike (3.x renamed the bootstrap timeout)."""
    defaults = getattr(KafkaProducer, "DEFAULT_CONFIG", {})
    out = {"max_block_ms": CLIENT_TIMEOUT_MS, "request_timeout_ms": CLIENT_TIMEOUT_MS}
    if "delivery_timeout_ms" in defaults:
        out["delivery_timeout_ms"] = 4 * CLIENT_TIMEOUT_MS
    if "bootstrap_timeout_ms" in defaults:
        out["bootstrap_timeout_ms"] = CLIENT_TIMEOUT_MS
    else:
        out["api_version_auto_timeout_ms"] = CLIENT_TIMEOUT_MS
    return out


def quiet_kafka_logs() -> None:
    """kafka-python logs every failed connection attempt at ERROR: a client command says it once."""
    for name in ["kafka", *logging.root.manager.loggerDict]:
        if name == "kafka" or name.startswith("kafka."):  # children set on their own, too
            logging.getLogger(name).setLevel(logging.CRITICAL)


class Publisher:
    def __init__(
        self, bootstrap_servers: str, topic: str, max_event_bytes: int = 25_000_000
    ) -> None:
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        check_broker(bootstrap_servers)
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap_servers.split(","),
                acks="all",
                # Not idempotent: the embedded broker (Tansu) stores an idempotent batch in three
                # writes, and a retry after a crash between them is acked as a duplicate though
                # nothing was stored. A retry may duplicate a record instead; versions make that
                # harmless (docs/how-to/deploy.md).
                enable_idempotence=False,
                linger_ms=10,
                max_request_size=max_event_bytes,
                **_timeouts(),
            )
        except KafkaError as exc:
            raise BrokerUnreachable(
                f"cannot talk to the Kafka broker at {bootstrap_servers}: {exc}"
            ) from exc

    def publish(
        self, events: list[DocumentEvent], progress: bool = True, desc: str = "publishing"
    ) -> int:
        """Send and wait until the broker confirmed every event (raises BrokerUnreachable).

        The bar shows on a terminal only: in a log file it would be one endless line.
        """
        futures = []
        headers = spans.kafka_headers()  # a caller's trace, continued by the worker
        try:
            bar = tqdm(
                events, desc=desc, unit="doc", disable=not (progress and sys.stderr.isatty())
            )
            for event in bar:
                futures.append(
                    self._producer.send(
                        self.topic, key=event.key(), value=event.to_bytes(), headers=headers
                    )
                )
            self._producer.flush(timeout=4 * CLIENT_TIMEOUT_MS / 1000)
            for f in futures:
                f.get(timeout=CLIENT_TIMEOUT_MS / 1000)  # surface any delivery error
        except KafkaError as exc:
            raise BrokerUnreachable(
                f"the broker at {self.bootstrap_servers} did not confirm the events on "
                f"{self.topic}: {type(exc).__name__}: {exc}"
            ) from exc
        return len(futures)

    def close(self) -> None:
        with contextlib.suppress(KafkaError):  # after a failed send: nothing more to report
            self._producer.close(timeout=5)
