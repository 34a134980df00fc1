"""Long-polls on GET /documents that cost no thread: waiters sleep on the event loop.

The ingest worker calls `DocumentWatch.notify(tenant, doc_id)` from its own thread right
after it writes a document's registry entry; every request waiting on that document
wakes up and re-reads the registry. Waiters also re-read every `fallback_s`, because a
worker in another process cannot notify this one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

Key = tuple[str, str]


class _Waiters:
    __slots__ = ("event", "count")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.count = 0


class DocumentWatch:
    """Per-(tenant, doc_id) wake-ups, bound to one running event loop."""

    def __init__(self, fallback_s: float = 1.0) -> None:
        self.fallback_s = fallback_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[Key, _Waiters] = {}  # touched only on the loop's thread

    def bind(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Attach to `loop` (default: the running one); call at startup, on the loop."""
        self._loop = loop or asyncio.get_running_loop()

    def unbind(self) -> None:
        self._loop = None
        self._waiting.clear()

    def notify(self, tenant: str, doc_id: str) -> None:
        """Thread-safe: wake the waiters on (tenant, doc_id). A no-op before `bind`."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and here
            loop.call_soon_threadsafe(self._wake, (tenant, doc_id))

    def _wake(self, key: Key) -> None:
        waiters = self._waiting.pop(key, None)
        if waiters is not None:
            waiters.event.set()

    @contextlib.contextmanager
    def watching(self, tenant: str, doc_id: str) -> Iterator[asyncio.Event]:
        """The event set by the next notify for (tenant, doc_id).

        Enter it *before* reading the registry: a write that lands between the read and
        the wait then still wakes the waiter.
        """
        if self._loop is None or self._loop.is_closed():
            self.bind()
        key = (tenant, doc_id)
        waiters = self._waiting.setdefault(key, _Waiters())
        waiters.count += 1
        try:
            yield waiters.event
        finally:
            waiters.count -= 1
            if waiters.count == 0 and self._waiting.get(key) is waiters:
                del self._waiting[key]

    async def sleep(self, event: asyncio.Event, timeout: float) -> bool:
        """Until `event` is set or `timeout` (capped at the fallback interval) passes."""
        if timeout <= 0:
            return event.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(timeout, self.fallback_s))
        return event.is_set()

    @property
    def waiters(self) -> int:
        return sum(w.count for w in self._waiting.values())
