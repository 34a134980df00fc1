"""Points for the Edge shard tests: random 768-d vectors (a few thousand pass Edge's 10 MB
indexing threshold and get an HNSW graph); a query with a point's own vector finds it first."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

from retrieval.store.edge.adapter import EdgeIndex
from retrieval.store.edge.tuning import EdgeTuning
from retrieval.store.types import ChunkPoint, Match, MatchAny, SparseVec
from tests.conftest import Loops

DIM = 768
N = 4000
# Manual cycles only (no threshold/interval trigger), unless a test says otherwise.
MANUAL = EdgeTuning(optimize_after_points=10**9, optimize_interval_s=3600)


def vector(i: int) -> list[float]:
    rnd = random.Random(i)
    v = [rnd.gauss(0, 1) for _ in range(DIM)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def pid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def points(start: int, n: int) -> list[ChunkPoint]:
    return [
        ChunkPoint(
            pid(i),
            vector(i),
            SparseVec([i % 97, 100 + i % 89], [1.0, 1.0]),
            {
                "tenant": f"t{i % 2}",
                "acl": ["eng"],
                "doc_id": f"d{i // 10}",
                "hash": f"h{i}",
                "chunk_index": i % 10,
                "version": 1,
                "text": f"chunk {i}",
            },
        )
        for i in range(start, start + n)
    ]


def load(index: EdgeIndex, start: int, n: int, batch: int = 500) -> None:
    for s in range(start, start + n, batch):
        index.upsert_chunks(points(s, min(batch, start + n - s)))


def top_hit(index: EdgeIndex, i: int, mode: str = "dense") -> str | None:
    cond = [Match("tenant", f"t{i % 2}"), MatchAny("acl", ("eng",))]
    sparse = SparseVec([i % 97, 100 + i % 89], [1.0, 1.0])
    hits = index.search(mode, vector(i), sparse, cond, 10)
    return hits[0].id if hits else None


def open_index(root: Path, tuning: EdgeTuning | None = MANUAL) -> EdgeIndex:
    index = EdgeIndex(root, "chunks", "documents", tuning=tuning)
    index.ensure_schema(DIM)
    return index


def dense_indexed(index: EdgeIndex) -> int:
    """Vectors in HNSW/sparse indexes of sealed segments (dense + sparse per point)."""
    return index.chunks.info().indexed_vectors_count


class Prober(Loops):
    """Queries and writes from two threads while a cycle runs; records the longest waits."""

    def __init__(self, index: EdgeIndex, first_new: int, known: int = N) -> None:
        self.index = index
        self.known = known  # ids below this are in the index when the probe starts
        self.next_id = first_new
        self.errors: list[BaseException] = []
        self.wrong = 0
        self.queries = 0
        self.max_query_s = 0.0
        self.max_write_s = 0.0
        super().__init__(self._query, self._write, join_s=30)

    def _query(self) -> None:
        i = 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if top_hit(self.index, i % self.known) != pid(i % self.known):
                    self.wrong += 1
            except BaseException as exc:  # noqa: BLE001 (reported by the test)
                self.errors.append(exc)
                return
            self.max_query_s = max(self.max_query_s, time.monotonic() - t0)
            self.queries += 1
            i += 37

    def _write(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.index.upsert_chunks(points(self.next_id, 5))
            except BaseException as exc:  # noqa: BLE001
                self.errors.append(exc)
                return
            self.max_write_s = max(self.max_write_s, time.monotonic() - t0)
            self.next_id += 5
            time.sleep(0.02)
