"""The write path's CPU work, parse → chunk and embed, in lanes of its own.

`ChildProcessor` (the default in the service) runs it in two spawned child processes at
a lower CPU priority: one parses and chunks, one embeds with its own copy of the model.
So the next documents are parsed while this one is embedded (each gets a core), the
API's query encoder never shares a lock with a batch encode, the worker's thread never
holds the GIL for parsing, and a document that hangs or crashes its parser is killed
after `parse_timeout_s` and dead-lettered instead of wedging its partition.
`InlineProcessor` does the same work in the calling thread (tests, tools, or
`FRESHRAG_INGEST_PROCESS=false`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

from ingest.chunker import Chunk, Chunker
from ingest.parser import UnsupportedDocument, parse
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

    def close(self) -> None:
        close = getattr(self._results, "close", None)
        if close is not None:
            close()


class Processor(Protocol):
    """Parse + chunk one document, and embed texts for the write path."""

    fingerprint: str

    def warm_up(self) -> None: ...

    def prepare(self, body: str | bytes, mime: str) -> PreparedDocument: ...

    def prepare_many(self, items: list[tuple[str | bytes, str]]) -> Parses:
        """Results in order; parsing may run ahead of the caller. Close it to stop early."""
        ...

    def encode(self, texts: list[str]) -> list[list[float]]: ...

    def close(self) -> None: ...


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

    def warm_up(self) -> None:
        pass

    def prepare(self, body: str | bytes, mime: str) -> PreparedDocument:
        return prepare_document(body, mime, self.chunker, self.max_chunks)

    def prepare_many(self, items: list[tuple[str | bytes, str]]) -> Parses:
        return Parses(self._prepare_each(items))

    def _prepare_each(self, items: list[tuple[str | bytes, str]]) -> Iterator[Parsed]:
        for body, mime in items:
            try:
                yield self.prepare(body, mime)
            except UnsupportedDocument as exc:
                yield exc

    def encode(self, texts: list[str]) -> list[list[float]]:
        return self.dense.encode(texts)

    def close(self) -> None:
        pass


# --- the child processes ----------------------------------------------------------------

_child: dict[str, object] = {}


def lower_priority(nice: int, idle: bool = False) -> None:
    """Give the calling thread (and the threads it starts later) away to the API's work.

    On Linux niceness and scheduling class are per thread: call this before a child
    starts its worker threads (torch's OpenMP pool), so they inherit it.
    """
    if nice:
        os.nice(nice)
    if idle and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _parse_init(
    chunker: tuple[int, int, bool, str], max_chunks: int, nice: int, idle: bool
) -> None:
    lower_priority(nice, idle)
    size, overlap, headers, model = chunker
    _child["chunker"] = Chunker(size, overlap, headers=headers, model=model)
    _child["max_chunks"] = max_chunks


def _embed_init(model: str, batch_size: int, nice: int, idle: bool, threads: int) -> None:
    # Torch's OpenMP threads must not spin while they wait: at a low priority, a spinning
    # thread that loses its core stalls the other one and burns the API's CPU meanwhile.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    lower_priority(nice, idle)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    DenseEncoder.limit_threads(threads)
    _child["dense"] = DenseEncoder(model, batch_size)


def _child_ping() -> int:
    return os.getpid()


def _child_prepare(body: str | bytes, mime: str) -> PreparedDocument:
    return prepare_document(body, mime, _child["chunker"], _child["max_chunks"])  # type: ignore[arg-type]


def _child_encode(texts: list[str]) -> list[list[float]]:
    return _child["dense"].encode(texts)  # type: ignore[union-attr]


class _Lane:
    """One single-process pool that can be killed and respawned (a hung call can't be cancelled)."""

    def __init__(self, name: str, initializer, initargs: tuple) -> None:  # noqa: ANN001
        self.name, self._init, self._args = name, initializer, initargs
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0

    def submit(self, fn, *args) -> Future:  # noqa: ANN001
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=self._init,
                    initargs=self._args,
                )
            return self._pool.submit(fn, *args)

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

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class _ChildParses(Parses):
    """The parser child's results in order, up to `parse_ahead` documents queued ahead."""

    def __init__(self, owner: ChildProcessor, items: list[tuple[str | bytes, str]]) -> None:
        self._owner, self._items = owner, items
        self._pending: list[Future] = []
        self._next_submit = 0
        self._next_yield = 0

    def _fill(self) -> None:
        lane, items = self._owner._parse, self._items
        while self._next_submit < len(items) and len(self._pending) < self._owner.parse_ahead:
            self._pending.append(lane.submit(_child_prepare, *items[self._next_submit]))
            self._next_submit += 1

    def next_ready(self) -> bool:
        self._fill()
        return not self._pending or self._pending[0].done()

    def __next__(self) -> Parsed:
        if self._next_yield >= len(self._items):
            raise StopIteration
        self._fill()
        future = self._pending.pop(0)
        mime = self._items[self._next_yield][1]
        self._next_yield += 1
        timeout = self._owner.parse_timeout_s
        try:
            return future.result(timeout=timeout)
        except UnsupportedDocument as exc:
            return exc
        except FutureTimeout:
            why = f"parsing took longer than {timeout:g}s (FRESHRAG_PARSE_TIMEOUT_S)"
            self._owner._parse.restart(f"a {mime} document: {why}")
        except BrokenProcessPool:
            why = "the parser process died on this document (out of memory?)"
            self._owner._parse.restart(why)
        # The queue died with the child: resubmit what was waiting behind this one.
        self._next_submit -= len(self._pending)
        self._pending.clear()
        return UnsupportedDocument(why)

    def close(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pending.clear()
        self._next_yield = self._next_submit = len(self._items)


class ChildProcessor:
    """Parse + chunk in one low-priority child process, embed in another; both respawn."""

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
        nice: int = 10,
        idle: bool = False,
        embed_threads: int = 0,
        parse_ahead: int = 8,
    ) -> None:
        self.fingerprint = fingerprint(
            Chunker(chunk_size, chunk_overlap, headers=headers, model=model), max_chunks
        )
        self.parse_timeout_s = parse_timeout_s
        self.parse_ahead = parse_ahead
        self.texts_encoded = 0
        self._parse = _Lane(
            "parser",
            _parse_init,
            ((chunk_size, chunk_overlap, headers, model), max_chunks, nice, idle),
        )
        self._embed = _Lane("embedder", _embed_init, (model, batch_size, nice, idle, embed_threads))

    @property
    def restarts(self) -> int:
        return self._parse.restarts + self._embed.restarts

    def warm_up(self) -> None:
        """Start both children and load the model now, not on the first document."""
        for f in [self._parse.submit(_child_ping), self._embed.submit(_child_ping)]:
            f.result()

    def prepare(self, body: str | bytes, mime: str) -> PreparedDocument:
        result = next(self.prepare_many([(body, mime)]))
        if isinstance(result, UnsupportedDocument):
            raise result
        return result

    def prepare_many(self, items: list[tuple[str | bytes, str]]) -> Parses:
        """Keep up to `parse_ahead` documents queued in the parser while the caller embeds."""
        return _ChildParses(self, items)

    def encode(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        try:
            vectors = self._embed.submit(_child_encode, texts).result()
        except BrokenProcessPool:
            self._embed.restart("the child process died while embedding")
            raise RuntimeError("the embedding process died; the batch will be retried") from None
        self.texts_encoded += len(texts)
        return vectors

    def close(self) -> None:
        self._parse.close()
        self._embed.close()
