"""`freshrag publish`: files and folders become document events on the topic.

Every body travels inside the event: text formats in `content`, PDF and DOCX base64 in
`content_base64`, so publisher and worker need no shared file system (and the worker
need not read files at all). The `source` is the file's URI, for citations.
"""

from __future__ import annotations

import base64
import mimetypes
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from kafka import KafkaProducer
from tqdm import tqdm

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


def guess_mime(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    return normalize_mime(mimetypes.guess_type(path.name)[0] or "application/octet-stream")


def iter_files(paths: Iterable[Path], root: Path | None = None) -> Iterator[tuple[Path, Path]]:
    """(file, root) pairs: a folder's files are named relative to that folder (or `root`)."""
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts):
                    yield f, root or p
        elif p.is_file():
            yield p, root or p.parent
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")


def default_version() -> int:
    """Milliseconds since the epoch: monotonic enough for a person re-publishing by hand."""
    return time.time_ns() // 1_000_000


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
    events = []
    for f, base in iter_files(paths, root):
        doc_id = prefix + f.relative_to(base).as_posix()
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
            events.append(DocumentEvent(**common))
        elif kind in BINARY_MIMES or kind not in SUPPORTED_MIMES:
            # Unsupported types are still sent: the worker dead-letters them with a reason.
            body = base64.b64encode(f.read_bytes()).decode()
            events.append(DocumentEvent(**common, content_base64=body))
        else:
            events.append(
                DocumentEvent(**common, content=f.read_text(encoding="utf-8", errors="replace"))
            )
    return events


class Publisher:
    def __init__(
        self, bootstrap_servers: str, topic: str, max_event_bytes: int = 25_000_000
    ) -> None:
        self.topic = topic
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers.split(","),
            acks="all",
            linger_ms=10,
            max_request_size=max_event_bytes,
        )

    def publish(
        self, events: list[DocumentEvent], progress: bool = True, desc: str = "publishing"
    ) -> int:
        futures = []
        for event in tqdm(events, desc=desc, unit="doc", disable=not progress):
            futures.append(self._producer.send(self.topic, key=event.key(), value=event.to_bytes()))
        self._producer.flush()
        for f in futures:
            f.get(timeout=30)  # surface any delivery error instead of losing it
        return len(futures)

    def close(self) -> None:
        self._producer.close()
