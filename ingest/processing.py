"""The write path's CPU work, parse → chunk and embed, in a lane of its own.

`ChildProcessor` (the default in the service) runs it in one spawned child process at a
lower CPU priority, with its own copy of the model. So the API's query encoder never
shares a lock with a batch encode, the worker's thread never holds the GIL for parsing,
and a document that hangs or crashes its parser is killed after `parse_timeout_s` and
dead-lettered instead of wedging its partition. `InlineProcessor` does the same work in
the calling thread (tests, tools, or `FRESHRAG_INGEST_PROCESS=false`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

from ingest.chunker import Chunk, Chunker
from ingest.parser import UnsupportedDocument, parse

try:  # TEMP until the parser rework lands
    from ingest.parser import PARSER_VERSION
except ImportError:
    PARSER_VERSION = "0"
from retrieval.encoders import DenseEncoder

log = logging.getLogger("freshrag.ingest")


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    chunks: list[Chunk]
    title: str | None


def fingerprint(chunk_size: int, chunk_overlap: int, max_chunks: int) -> str:
    """What besides the body decides a document's chunks: parser version and chunk settings."""
    return f"parser={PARSER_VERSION};chunk={chunk_size}/{chunk_overlap};max={max_chunks}"


class Processor(Protocol):
    """Parse + chunk one document, and embed texts for the write path."""

    fingerprint: str

    def warm_up(self) -> None: ...

    def prepare(self, body: str | bytes, mime: str) -> PreparedDocument: ...

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
        self.fingerprint = fingerprint(
            getattr(chunker, "chunk_size", 0), getattr(chunker, "chunk_overlap", 0), max_chunks
        )

    def warm_up(self) -> None:
        pass

    def prepare(self, body: str | bytes, mime: str) -> PreparedDocument:
        return prepare_document(body, mime, self.chunker, self.max_chunks)

    def encode(self, texts: list[str]) -> list[list[float]]:
        return self.dense.encode(texts)

    def close(self) -> None:
        pass


# --- the child process ----------------------------------------------------------------

_child: dict[str, object] = {}


def _child_init(
    model: str, batch_size: int, chunk_size: int, chunk_overlap: int, max_chunks: int, nice: int
) -> None:
    if nice:
        os.nice(nice)
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    _child["chunker"] = Chunker(chunk_size, chunk_overlap)
    _child["dense"] = DenseEncoder(model, batch_size)
    _child["max_chunks"] = max_chunks


def _child_ping() -> int:
    return os.getpid()


def _child_prepare(body: str | bytes, mime: str) -> PreparedDocument:
    return prepare_document(body, mime, _child["chunker"], _child["max_chunks"])  # type: ignore[arg-type]


def _child_encode(texts: list[str]) -> list[list[float]]:
    return _child["dense"].encode(texts)  # type: ignore[union-attr]


class ChildProcessor:
    """Parse, chunk and embed in one low-priority child process, restarted when it dies."""

    def __init__(
        self,
        model: str,
        batch_size: int,
        chunk_size: int,
        chunk_overlap: int,
        *,
        max_chunks: int = 5000,
        parse_timeout_s: float = 120.0,
        nice: int = 10,
    ) -> None:
        self._initargs = (model, batch_size, chunk_size, chunk_overlap, max_chunks, nice)
        self.fingerprint = fingerprint(chunk_size, chunk_overlap, max_chunks)
        self.parse_timeout_s = parse_timeout_s
        self.texts_encoded = 0
        self.restarts = 0
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_child_init,
                    initargs=self._initargs,
                )
            return self._pool

    def _restart(self, why: str) -> None:
        """Kill the child (a hung parse cannot be cancelled any other way); the next call spawns one."""
        log.warning("restarting the ingest child process: %s", why)
        with self._lock:
            pool, self._pool = self._pool, None
            self.restarts += 1
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def warm_up(self) -> None:
        """Start the child and load its model now, not on the first document."""
        self._executor().submit(_child_ping).result()

    def prepare(self, body: str | bytes, mime: str) -> PreparedDocument:
        future = self._executor().submit(_child_prepare, body, mime)
        try:
            return future.result(timeout=self.parse_timeout_s)
        except FutureTimeout:
            self._restart(f"parsing a {mime} document took over {self.parse_timeout_s:g}s")
            raise UnsupportedDocument(
                f"parsing took longer than {self.parse_timeout_s:g}s (FRESHRAG_PARSE_TIMEOUT_S)"
            ) from None
        except BrokenProcessPool:
            self._restart("the child process died while parsing")
            raise UnsupportedDocument(
                "the parser process died on this document (out of memory?)"
            ) from None

    def encode(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        try:
            vectors = self._executor().submit(_child_encode, texts).result()
        except BrokenProcessPool:
            self._restart("the child process died while embedding")
            raise RuntimeError("the embedding process died; the batch will be retried") from None
        self.texts_encoded += len(texts)
        return vectors

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
