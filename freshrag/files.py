"""Small state files that must survive a crash or a power cut whole."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# Filesystems that cannot fsync a directory say so with these (some network, FUSE and
# Ceph mounts): the file itself is still synced, and that is the most they offer.
_NO_DIR_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def replace_atomically(path: Path, text: str, durable: bool = True) -> None:
    """Writes `text` to `path` through a temporary file renamed over it, so a reader (or a
    process that crashed midway) sees the old file or the new one, never a torn one.

    `durable` also survives a power cut: the temporary file is synced before the rename
    (else the rename can come back as an empty file) and the directory after it (else as
    the old file). Without it nothing waits for the disk, for callers that hold others up
    and call `sync_file` right after letting them go.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        _sync_dir(path.parent)


def sync_file(path: Path) -> None:
    """Puts a file written with `durable=False`, and its last rename, on disk."""
    _fsync(path, os.O_RDONLY)
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    try:
        _fsync(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        if exc.errno not in _NO_DIR_SYNC:
            raise
        log.debug("%s: this filesystem cannot sync a directory (%s)", directory, exc)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
