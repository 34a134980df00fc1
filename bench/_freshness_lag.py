"""How bench.freshness measures the lag of an edit: from its `event_time` to the moment the
worker writes its version (or a newer one), through the worker's write hook."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bench.harness import pct

if TYPE_CHECKING:
    from freshrag.runtime import Core
    from ingest.events import DocumentEvent
    from ingest.publisher import Publisher


class LagClock:
    """Edits waiting to be written, and the lag of each once its version (or newer) lands."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.lock = threading.Lock()
        self.pending: dict[str, list[tuple[int, float]]] = {}
        self.lags: dict[tuple[str, int], float] = {}  # (doc_id, version) → seconds

    def published(self, doc_id: str, version: int, at: float) -> None:
        with self.lock:
            self.pending.setdefault(doc_id, []).append((version, at))

    def notify(self, tenant: str, doc_id: str) -> None:  # the worker's write hook
        now = time.time()
        state = self.core.index.get_document(tenant, doc_id)
        with self.lock:
            waiting = self.pending.get(doc_id, [])
            done = [(v, at) for v, at in waiting if state and state.version >= v]
            self.pending[doc_id] = [(v, at) for v, at in waiting if (v, at) not in done]
            self.lags.update(((doc_id, v), now - at) for v, at in done)

    def backlog(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.pending.values())

    def waiting(self) -> set[tuple[str, int]]:
        """The (doc_id, version) of every edit not written yet."""
        with self.lock:
            return {(d, v) for d, edits in self.pending.items() for v, _ in edits}

    def take(self) -> list[float]:
        return list(self.take_by_edit().values())

    def take_by_edit(self) -> dict[tuple[str, int], float]:
        """The lags measured since the last take, by (doc_id, version)."""
        with self.lock:
            out, self.lags = self.lags, {}
            return out


def one_line_edit(page: DocumentEvent) -> tuple[DocumentEvent, float]:
    """`page` with one more sentence, as a new version sent now (and when, for the lag)."""
    version = time.time_ns() // 1000
    now = time.time()
    edit = page.model_copy(
        update={
            "version": version,
            "content": (page.content or "") + f"\n\nEdited sentence number {version}.\n",
            "event_time": datetime.fromtimestamp(now, UTC),
        }
    )
    return edit, now


def edit_stream(
    publisher: Publisher, pages: list[DocumentEvent], clock: LagClock, rate: float, seconds: float
) -> int:
    """One-sentence edits to random pages at `rate`/s; each a new version."""
    sent, started = 0, time.monotonic()
    rng = random.Random(7)
    while time.monotonic() - started < seconds:
        page = rng.choice(pages)
        edit, now = one_line_edit(page)
        clock.published(page.doc_id, edit.version, now)
        publisher.publish([edit], progress=False)
        sent += 1
        time.sleep(max(0.0, (sent / rate) - (time.monotonic() - started)))
    return sent


def summary(lags: list[float]) -> dict:
    return {
        "edits_measured": len(lags),
        "lag_p50_s": round(pct(lags, 50), 3),
        "lag_p95_s": round(pct(lags, 95), 3),
        "lag_p99_s": round(pct(lags, 99), 3),
        "lag_max_s": round(max(lags, default=0.0), 3),
    }


def drain(clock: LagClock, limit_s: float = 600) -> float:
    started = time.monotonic()
    while clock.backlog() and time.monotonic() - started < limit_s:
        time.sleep(0.05)
    return round(time.monotonic() - started, 2)
