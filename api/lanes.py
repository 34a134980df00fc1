"""Bounded lanes: each kind of blocking work gets its own threads and its own short queue.

Endpoints are `async`; the sync work behind them (encoding, Qdrant calls, registry reads)
runs in a lane's threads. A slow kind of work can then fill only its own lane: long-polls,
answers and searches never take each other's threads, and `/healthz` takes none at all.
A lane whose queue is full answers 503 with Retry-After instead of queueing without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


class LaneFull(Exception):
    """The lane already has its maximum of queued requests; the caller should retry later."""

    def __init__(self, lane: str, queued: int, retry_after_s: int) -> None:
        super().__init__(
            f"the server is busy: {queued} {lane} requests are already queued; "
            f"retry in {retry_after_s} s"
        )
        self.lane = lane
        self.retry_after_s = retry_after_s


class Lane:
    """A CapacityLimiter (threads at once) plus a cap on how many may wait for it."""

    def __init__(self, name: str, concurrency: int, queue: int, retry_after_s: int = 1) -> None:
        self.name = name
        self.queue = queue
        self.retry_after_s = retry_after_s
        self.limiter = anyio.CapacityLimiter(concurrency)

    @property
    def waiting(self) -> int:
        return self.limiter.statistics().tasks_waiting

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` in one of this lane's threads; LaneFull if too many already wait."""
        if self.limiter.available_tokens < 1 and self.waiting >= self.queue:
            raise LaneFull(self.name, self.waiting, self.retry_after_s)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)


class Lanes:
    """One lane per kind of work, sized from settings."""

    def __init__(
        self, retrieve: int, answer: int, documents: int, queue: int, ready: int = 1
    ) -> None:
        self.retrieve = Lane("retrieve", retrieve, queue)
        self.answer = Lane("answer", answer, queue)
        self.documents = Lane("documents", documents, queue)
        # /readyz probes the broker and Qdrant; a stuck probe must not pile up threads.
        self.ready = Lane("readyz", ready, min(queue, 8))
