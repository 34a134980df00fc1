"""Small state files that must survive a crash or a power cut whole."""

from __future__ import annotations

import os
from pathlib import Path


def replace_atomically(path: Path, text: str, durable: bool = True) -> None:
    """Writes `text` to `path` through a temporary file renamed over it, so a reader (or a
    process that crashed midway) sees the old file or the new one, never a torn one.

    `durable` also survives a power cut (`sync_file`). Without it the rename costs no disk
    wait, for callers that hold others up and sync right after letting them go.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    if durable:
        sync_file(path)


def sync_file(path: Path) -> None:
    """fsyncs the file, then its directory so its last rename is on disk too: a rename
    without either can come back from a power cut as an empty file, or as the old one."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
