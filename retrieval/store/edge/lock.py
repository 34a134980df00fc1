"""One owner per collection: the service or `freshrag optimize`, never both."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class ShardBusy(RuntimeError):
    """Another process (or another store in this one) has the collection open."""


def lock_collection(root: Path, collection: str) -> int:
    """Takes `<collection>.lock` (flock, released when the fd closes or the process dies);
    returns its fd. Edge locks each shard dir's WAL, but the a/b pair, the state file and
    the op logs belong to whoever holds this: the service or `freshrag optimize`."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / f"{collection}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ShardBusy(f"{root / collection} is open in another process") from None
    return fd
