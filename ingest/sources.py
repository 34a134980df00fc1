"""Where a document's body comes from: inline text, inline base64, or an allowed file.

Event fields are untrusted. A `file://` source is read only when its real path (after
resolving `..` and symlinks) lies inside a folder the operator listed in
`FRESHRAG_SOURCE_ROOTS`; with no roots configured the worker never reads a file an event
names. Anything else is refused with a reason, and the event goes to the dead-letter topic.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from ingest.events import DocumentEvent
from ingest.parser import UnsupportedDocument


class SourcePolicy:
    """The operator's allow-list of folders, resolved once at start."""

    def __init__(self, roots: Sequence[Path] = ()) -> None:
        self.roots = tuple(Path(r).resolve() for r in roots)

    def resolve(self, source: str) -> Path:
        """The real path of an allowed `file://` source; raises UnsupportedDocument otherwise."""
        url = urlparse(source)
        if url.scheme != "file":
            raise UnsupportedDocument(
                f"cannot fetch source {source!r}: only file:// sources inside "
                "FRESHRAG_SOURCE_ROOTS are read; send the body inline ('content' or "
                "'content_base64')"
            )
        if url.netloc not in ("", "localhost"):
            raise UnsupportedDocument(f"refused source {source!r}: remote file hosts are not read")
        if not self.roots:
            raise UnsupportedDocument(
                f"refused source {source!r}: this worker reads no files "
                "(FRESHRAG_SOURCE_ROOTS is empty); send the body inline"
            )
        raw = unquote(url.path)
        if "\x00" in raw:
            raise UnsupportedDocument(f"refused source {source!r}: NUL in path")
        real = Path(os.path.realpath(raw))
        if not any(real.is_relative_to(root) for root in self.roots):
            raise UnsupportedDocument(
                f"refused source {source!r}: {real} is outside the allowed folders "
                f"({', '.join(str(r) for r in self.roots)})"
            )
        return real


def load_body(event: DocumentEvent, policy: SourcePolicy, max_bytes: int) -> str | bytes:
    """The document's body, bounded by `max_bytes`: inline wins, then an allowed file."""
    if event.content is not None:
        if len(event.content) > max_bytes or len(event.content.encode()) > max_bytes:
            raise UnsupportedDocument(f"inline content exceeds {max_bytes} bytes")
        return event.content
    if event.content_base64 is not None:
        if len(event.content_base64) * 3 // 4 > max_bytes + 3:
            raise UnsupportedDocument(f"content_base64 decodes to more than {max_bytes} bytes")
        return event.binary_body() or b""
    path = policy.resolve(event.source or "")
    try:
        # O_NOFOLLOW: the checked path must be the file opened, not a symlink swapped in.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise UnsupportedDocument(f"cannot read {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnsupportedDocument(f"refused source {path}: not a regular file")
        if info.st_size > max_bytes:
            raise UnsupportedDocument(
                f"{path} is {info.st_size} bytes, over the {max_bytes} byte limit"
            )
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsupportedDocument(f"{path} is over the {max_bytes} byte limit")
    return data
