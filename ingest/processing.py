"""The write path's CPU work, parse → chunk and embed, in lanes of its own.

`ChildProcessor` (the default in the service) runs it in spawned child processes at a
lower CPU priority (a niceness, so it keeps a guaranteed share beside busy neighbours):
a live parser, a bulk parser (backfills and long documents) and an embedder with its own
copy of the model. So the next documents are parsed while this one is embedded, a
one-line edit never waits for a long document's parse, the API's query encoder never
shares a lock with a batch encode, the worker's thread never holds the GIL for parsing,
and a document that hangs or crashes its parser is killed after `parse_timeout_s` and
dead-lettered instead of wedging its partition. `InlineProcessor` does the same work in
the calling thread (tests, tools, or `FRESHRAG_INGEST_PROCESS=false`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

from ingest.chunker import Chunk, Chunker
from ingest.parser import UnsupportedDocument, parse
from retrieval.background import lower_priority
from retrieval.encoders import DenseEncoder

log = logging.getLogger("freshrag.ingest")


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    chunks: list[Chunk]
    title: str | None


def fingerprint(chunker: Chunker, max_chunks: int) -> str:
    """What besides the body decides a document's chunks: parser version and chunk settings."""
    return f"{chunker.identity};max={max_chunks}"


Parsed = PreparedDocument | UnsupportedDocument


class Stopped(RuntimeError):
    """The processor was closed (shutting down): the batch in hand stays uncommitted."""


class Parses(Iterator[Parsed]):
    """Parsed documents in input order, as a processor produces them.

    `next_ready()` tells the caller whether the next result is already there: when it is
    not, the caller embeds what it holds instead of waiting, so parse and embed overlap.
    In-line parsing has nothing to overlap with, so there it is always true.
    """

    def __init__(self, results: Iterator[Parsed]) -> None:
        self._results = results

    def __next__(self) -> Parsed:
        return next(self._results)

    def next_ready(self) -> bool:
        return True

    def wait_ready(self, interrupted: Callable[[], bool]) -> bool:
        """Wait for the next result; False if `interrupted()` turned true first."""
        return True

    def close(self) -> None:
        close = getattr(self._results, "close", None)
        if close is not None:
            close()


class Processor(Protocol):
    """Parse + chunk one document, and embed texts for the write path."""

    fingerprint: str

    def warm_up(self) -> None: ...

    def prepare(self, body: str | bytes, mime: str) -> PreparedDocument: ...

    def prepare_many(
        self,
        items: list[tuple[str | bytes, str]],
        *,
        bulk: bool = False,
        keys: list[str] | None = None,
    ) -> Parses:
        """Results in order; parsing may run ahead of the caller. Close it to stop early.
        `bulk` work (backfills, long documents) runs apart from live edits."""
        ...

    def encode(self, texts: list[str]) -> list[list[float]]: ...

    def busy(self) -> bool:
        """Whether the write path is using the CPU now (the query side then holds back)."""
        ...

    def active(self, window_s: float) -> bool:
        """Whether the write path had work in hand within the last `window_s`."""
        ...

    def close(self, timeout_s: float | None = None) -> int:
        """Stop; work in hand may take `timeout_s`, then it is killed. Returns kills."""
        ...


def prepare_document(
    body: str | bytes, mime: str, chunker: Chunker, max_chunks: int
) -> PreparedDocument:
    """Parse and chunk; every failure of this one document is an UnsupportedDocument."""
    elements = parse(body, mime)
    try:
        chunks = chunker.chunk(elements)
    except Exception as exc:  # a chunker bug on one document must not stall its partition
        raise UnsupportedDocument(f"could not chunk: {type(exc).__name__}: {exc}") from exc
    if len(chunks) > max_chunks:
        raise UnsupportedDocument(
            f"document has {len(chunks)} chunks, over the limit of {max_chunks} "
            "(FRESHRAG_MAX_CHUNKS_PER_DOCUMENT)"
        )
    title = next((e.text[:300] for e in elements if e.category == "Title"), None)
    return PreparedDocument(chunks, title)


class InlineProcessor:
    """The write path's CPU work in the calling thread (no timeout: a thread cannot be killed)."""

    def __init__(self, chunker: Chunker, dense: DenseEncoder, max_chunks: int = 5000) -> None:
        self.chunker, self.dense, self.max_chunks = chunker, dense, max_chunks
        self.fingerprint = fingerprint(chunker, max_chunks)
        self._last = float("-inf")  # when work in hand last began or ended

    def warm_up(self) -> None:
        pass

    def prepare(self, body: str | bytes, mime: str) -> PreparedDocument:
        self._last = time.monotonic()
        try:
            return prepare_document(body, mime, self.chunker, self.max_chunks)
        finally:
            self._last = time.monotonic()

    def prepare_many(
        self,
        items: list[tuple[str | bytes, str]],
        *,
        bulk: bool = False,
        keys: list[str] | None = None,
    ) -> Parses:
        return Parses(self._prepare_each(items))

    def _prepare_each(self, items: list[tuple[str | bytes, str]]) -> Iterator[Parsed]:
        for body, mime in items:
            try:
                yield self.prepare(body, mime)
            except UnsupportedDocument as exc:
                yield exc

    def encode(self, texts: list[str]) -> list[list[float]]:
        self._last = time.monotonic()
        try:
            return self.dense.encode(texts)
        finally:
            self._last = time.monotonic()

    def busy(self) -> bool:
        return False  # in-line work shares the query encoder's own lock

    def active(self, window_s: float) -> bool:
        return time.monotonic() - self._last < window_s

    def close(self, timeout_s: float | None = None) -> int:
        return 0


# --- the child processes ----------------------------------------------------------------

_child: dict[str, object] = {}

BULK_EXTRA_NICE = 5  # the bulk parser's niceness above the live lanes' (weight ÷ 3)

# Tiny documents each parser child parses once at start: the first real document then
# finds docutils, markdown-it and the chunker's tokenizer loaded (seconds on a busy core).
_WARM_DOCUMENTS = (
    ("Warm up\n=======\n\nA paragraph.\n", "text/x-rst"),
    ("# Warm up\n\nA paragraph.\n", "text/markdown"),
)


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group: the parent decides when a child stops
    # (after the batch in hand, or killed at the shutdown deadline), not the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _parse_init(
    chunker: tuple[int, int, bool, str], max_chunks: int, nice: int, idle: bool
) -> None:
    _ignore_interrupts()
    lower_priority(nice, idle)
    size, overlap, headers, model = chunker
    _child["chunker"] = Chunker(size, overlap, headers=headers, model=model)
    _child["max_chunks"] = max_chunks


def _embed_init(
    model: str, batch_size: int, nice: int, idle: bool, threads: int, traced: bool = True
) -> None:
    _ignore_interrupts()
    # Torch's OpenMP threads must not spin while they wait: at a low priority, a spinning
    # thread that loses its core stalls the other one and burns the API's CPU meanwhile.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    lower_priority(nice, idle)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    DenseEncoder.limit_threads(threads)
    _child["dense"] = dense = DenseEncoder(model, batch_size)
    if traced:
        dense.trace()  # one call per batch, ~10 % less time a chunk than eager


def _child_warm_parse() -> int:
    for body, mime in _WARM_DOCUMENTS:
        # A parser missing here fails its own documents, not the start.
        with contextlib.suppress(UnsupportedDocument):
            _child_prepare(body, mime)
    return os.getpid()


def _child_warm_encode() -> int:
    _child["dense"].encode(["warm up the model"])  # type: ignore[union-attr]
    return os.getpid()


def _child_prepare(body: str | bytes, mime: str) -> PreparedDocument:
    return prepare_document(body, mime, _child["chunker"], _child["max_chunks"])  # type: ignore[arg-type]


def _child_encode(texts: list[str], threads: int = 0) -> list[list[float]]:
    if threads and threads != _child.get("threads"):
        DenseEncoder.limit_threads(threads)
        _child["threads"] = threads
    return _child["dense"].encode(texts)  # type: ignore[union-attr]


class _Activity:
    """Calls in flight in the children: the write path counts as busy once it has worked
    for `sustained_s` without a pause of `quiet_s` (a burst, a long document, a backfill).
    Until then the query side keeps every core; CPU weights (niceness) keep the floor."""

    def __init__(self, sustained_s: float = 1.0, quiet_s: float = 0.25) -> None:
        self.sustained_s, self.quiet_s = sustained_s, quiet_s
        self._lock = threading.Lock()
        self._running = 0
        self._ended = float("-inf")
        self._since: float | None = None  # start of the current stretch of work

    def started(self, future: Future) -> None:
        now = time.monotonic()
        with self._lock:
            if self._running == 0 and now - self._ended >= self.quiet_s:
                self._since = now
            self._running += 1
        future.add_done_callback(self._done)

    def _done(self, _future: Future) -> None:
        with self._lock:
            self._running -= 1
            self._ended = time.monotonic()

    def busy(self) -> bool:
        now = time.monotonic()
        with self._lock:
            working = self._running > 0 or now - self._ended < self.quiet_s
            return working and self._since is not None and now - self._since >= self.sustained_s

    def active(self, window_s: float) -> bool:
        with self._lock:
            return self._running > 0 or time.monotonic() - self._ended < window_s


class _Lane:
    """One single-process pool that can be killed and respawned (a hung call can't be cancelled)."""

    def __init__(
        self,
        name: str,
        initializer,
        initargs: tuple,
        activity: _Activity | None = None,  # noqa: ANN001
    ) -> None:
        self.name, self._init, self._args = name, initializer, initargs
        self._activity = activity
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0
        self.closed = False

    def submit(self, fn, *args) -> Future:  # noqa: ANN001
        with self._lock:
            if self.closed:
                raise Stopped(f"the ingest {self.name} process was stopped")
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=self._init,
                    initargs=self._args,
                )
            future = self._pool.submit(fn, *args)
        if self._activity is not None:
            self._activity.started(future)
        return future

    def restart(self, why: str) -> None:
        log.warning("restarting the ingest %s process: %s", self.name, why)
        with self._lock:
            pool, self._pool = self._pool, None
            self.restarts += 1
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self, timeout_s: float | None = None) -> int:
        """Let the call in hand end, for up to `timeout_s` (None: however long it takes);
        then kill the child. Returns how many children had to be killed."""
        with self._lock:
            pool, self._pool = self._pool, None
            self.closed = True
        if pool is None:
            return 0
        if timeout_s is None:
            pool.shutdown(wait=True, cancel_futures=True)
            return 0
        procs = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout_s
        killed = 0
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning(
                    "the ingest %s process (pid %s) did not stop within the shutdown "
                    "timeout: killed",
                    self.name,
                    proc.pid,
                )
                proc.kill()
                proc.join(5)
                killed += 1
        return killed


class _ChildParses(Parses):
    """A parser child's results in order, up to `parse_ahead` documents queued ahead.

    With `memo` (the bulk lane), a parse still running when the caller gives up (a live
    event arrived) is kept under its key and picked up by the next try, so a long
    document's parse is never thrown away nor run twice.
    """

    def __init__(
        self,
        owner: ChildProcessor,
        lane: _Lane,
        items: list[tuple[str | bytes, str]],
        keys: list[str] | None = None,
        memo: OrderedDict[str, Future] | None = None,
    ) -> None:
        self._owner, self._lane, self._items = owner, lane, items
        self._keys = keys
        self._memo = memo
        self._pending: list[Future] = []
        self._next_submit = 0
        self._next_yield = 0

    def _fill(self) -> None:
        items = self._items
        while self._next_submit < len(items) and len(self._pending) < self._owner.parse_ahead:
            key = self._keys[self._next_submit] if self._keys else None
            future = self._memo.get(key) if self._memo is not None and key else None
            if future is None or future.cancelled():
                future = self._lane.submit(_child_prepare, *items[self._next_submit])
                if self._memo is not None and key:
                    self._memo[key] = future
                    while len(self._memo) > 32:
                        self._memo.popitem(last=False)
            self._pending.append(future)
            self._next_submit += 1

    def next_ready(self) -> bool:
        self._fill()
        return not self._pending or self._pending[0].done()

    def wait_ready(self, interrupted: Callable[[], bool], step_s: float = 0.02) -> bool:
        """Wait for the next result unless `interrupted()` turns true first (then False)."""
        self._fill()
        while self._pending and not self._pending[0].done():
            if interrupted():
                return False
            futures_wait([self._pending[0]], timeout=step_s)
        return True

    def __next__(self) -> Parsed:
        if self._next_yield >= len(self._items):
            raise StopIteration
        self._fill()
        future = self._pending.pop(0)
        if self._memo is not None and self._keys:
            self._memo.pop(self._keys[self._next_yield], None)
        mime = self._items[self._next_yield][1]
        self._next_yield += 1
        timeout = self._owner.parse_timeout_s
        try:
            return future.result(timeout=timeout)
        except UnsupportedDocument as exc:
            return exc
        except FutureTimeout:
            why = f"parsing took longer than {timeout:g}s (FRESHRAG_PARSE_TIMEOUT_S)"
            self._lane.restart(f"a {mime} document: {why}")
        except BrokenProcessPool:
            if self._lane.closed:  # killed at shutdown: not this document's fault
                raise Stopped(f"the ingest {self._lane.name} process was stopped") from None
            why = "the parser process died on this document (out of memory?)"
            self._lane.restart(why)
        # The queue died with the child: resubmit what was waiting behind this one.
        if self._memo is not None:
            self._memo.clear()
        self._next_submit -= len(self._pending)
        self._pending.clear()
        return UnsupportedDocument(why)

    def close(self) -> None:
        for f in self._pending:
            # The bulk lane keeps a running parse for the next try; the rest is dropped.
            if self._memo is None or not f.running():
                f.cancel()
        if self._memo is not None:
            for key in [k for k, f in self._memo.items() if f.cancelled()]:
                del self._memo[key]
        self._pending.clear()
        self._next_yield = self._next_submit = len(self._items)


class ChildProcessor:
    """Parse + chunk in child processes, embed in another, each at a lower CPU priority.

    Two parser children: `live` for small live edits, `bulk` for backfills and long
    documents, so a one-line edit never queues behind a 100-page manual's parse. One
    embedder child, whose calls a bulk batch keeps short (slices), so a live edit waits
    for at most one slice. Every child respawns after a crash or a timeout.
    """

    def __init__(
        self,
        model: str,
        batch_size: int,
        chunk_size: int,
        chunk_overlap: int,
        *,
        headers: bool = True,
        max_chunks: int = 5000,
        parse_timeout_s: float = 120.0,
        nice: int = 5,
        idle: bool = False,
        embed_threads: int = 0,
        parse_ahead: int = 8,
        queries_active: Callable[[], bool] | None = None,
        traced: bool = True,
    ) -> None:
        self.fingerprint = fingerprint(
            Chunker(chunk_size, chunk_overlap, headers=headers, model=model), max_chunks
        )
        self.parse_timeout_s = parse_timeout_s
        self.parse_ahead = parse_ahead
        self.texts_encoded = 0
        self.activity = _Activity()
        # Every core while no query is being served, one while queries are: the API's
        # encoder then keeps a core of its own (and edits keep theirs).
        self.embed_threads = embed_threads or len(os.sched_getaffinity(0))
        self._queries_active = queries_active
        parse_args = ((chunk_size, chunk_overlap, headers, model), max_chunks, nice, idle)
        self._parse = _Lane("parser", _parse_init, parse_args, self.activity)
        # Bulk parses (a long document, a backfill) run a step lower still: beside a
        # live edit's parse and embed they take the CPU that is left.
        bulk_args = (parse_args[0], max_chunks, nice + BULK_EXTRA_NICE, idle)
        self._parse_bulk = _Lane("bulk parser", _parse_init, bulk_args, self.activity)
        self._bulk_memo: OrderedDict[str, Future] = OrderedDict()
        self._embed = _Lane(
            "embedder",
            _embed_init,
            (model, batch_size, nice, idle, embed_threads, traced),
            self.activity,
        )

    @property
    def restarts(self) -> int:
        return self._parse.restarts + self._parse_bulk.restarts + self._embed.restarts

    def busy(self) -> bool:
        """Whether the write path is using (or just used) its children."""
        return self.activity.busy()

    def active(self, window_s: float) -> bool:
        return self.activity.active(window_s)

    def warm_up(self) -> None:
        """Start every child, load the model and the parsers now, not on the first document."""
        futures = [
            self._parse.submit(_child_warm_parse),
            self._parse_bulk.submit(_child_warm_parse),
            self._embed.submit(_child_warm_encode),
        ]
        for f in futures:
            f.result()

    def prepare(self, body: str | bytes, mime: str) -> PreparedDocument:
        result = next(self.prepare_many([(body, mime)]))
        if isinstance(result, UnsupportedDocument):
            raise result
        return result

    def prepare_many(
        self,
        items: list[tuple[str | bytes, str]],
        *,
        bulk: bool = False,
        keys: list[str] | None = None,
    ) -> Parses:
        """Keep up to `parse_ahead` documents queued in a parser while the caller embeds.

        `bulk` uses the bulk parser; there a parse still running when the caller gives up
        is kept under its key (a content hash) for the next try.
        """
        if bulk:
            return _ChildParses(self, self._parse_bulk, items, keys, self._bulk_memo)
        return _ChildParses(self, self._parse, items)

    def encode(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        try:
            sharing = self._queries_active is not None and self._queries_active()
            threads = 1 if sharing else self.embed_threads
            vectors = self._embed.submit(_child_encode, texts, threads).result()
        except BrokenProcessPool:
            if self._embed.closed:
                raise Stopped("the ingest embedder process was stopped") from None
            self._embed.restart("the child process died while embedding")
            raise RuntimeError("the embedding process died; the batch will be retried") from None
        self.texts_encoded += len(texts)
        return vectors

    def close(self, timeout_s: float | None = None) -> int:
        """Stop the children: each may end its call in hand within `timeout_s`, then it is
        killed (None: wait as long as it takes). Returns how many were killed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        self._bulk_memo.clear()
        return sum(lane.close(left()) for lane in (self._parse, self._parse_bulk, self._embed))
