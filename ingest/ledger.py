"""A local record of committed offsets, to notice when the broker forgets them.

The embedded Tansu broker keeps everything in memory: after it restarts, the topic is
empty and the group's committed offsets are gone, so events that were published but not
yet indexed are lost without a trace. Each worker writes the offsets it committed to a
small file under the data folder; on start it compares them with what the broker says
and reports the difference (log, `/readyz`, a Prometheus gauge) instead of carrying on
as if nothing happened.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("freshrag.worker")

_lock = threading.Lock()  # several workers of one process share the file


class OffsetLedger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, int]:
        """Committed next offsets by "topic:partition"."""
        try:
            raw = json.loads(self.path.read_text())
            return {str(k): int(o) for k, o in raw.get("partitions", {}).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def record(self, committed: dict[str, int]) -> None:
        """Merge offsets in (they only move forward) and replace the file atomically."""
        if not committed:
            return
        with _lock:
            merged = self.read()
            for p, o in committed.items():
                merged[p] = max(o, merged.get(p, 0))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"partitions": dict(sorted(merged.items()))}))
            tmp.replace(self.path)

    def forget(self) -> None:
        """After a loss was reported: start recording afresh from the broker's new state."""
        with _lock:
            self.path.unlink(missing_ok=True)


def lost_offsets(
    recorded: dict[str, int], committed: dict[str, int | None], log_end: dict[str, int]
) -> list[str]:
    """Partitions whose recorded progress the broker no longer has, described for people."""
    problems = []
    for p, mine in sorted(recorded.items()):
        if mine <= 0:
            continue
        theirs = committed.get(p)
        end = log_end.get(p, 0)
        if theirs is None or theirs < mine or end < mine:
            problems.append(
                f"{p}: this worker had committed offset {mine}, the broker now has "
                f"{'no committed offset' if theirs is None else theirs} and a log ending at {end}"
            )
    return problems
