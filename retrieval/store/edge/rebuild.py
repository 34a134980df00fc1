"""Indexing a shard full of unindexed points a step at a time (in the optimiser's child,
or offline), so no HNSW graph is built over a whole backlog at once."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from retrieval.memory import trim_heap

# Points indexed at a time; Edge's default max segment on 2 cores is ~400 MB of vectors.
# Read as `rebuild.REPLAY_STEP` wherever it is used, so a test can lower it in one place.
REPLAY_STEP = 250_000


def needs_rebuild(info: Any, step: int) -> bool:
    """Whether a shard holds more unindexed points than one step (dense + sparse each count):
    one filled before the optimiser existed, or written with it off."""
    return 2 * info.points_count - info.indexed_vectors_count > step


def rebuild_into(
    shard: qe.EdgeShard,
    dest: Path,
    config: qe.EdgeConfig,
    step: int,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Copies `shard` into a new shard at `dest`, `step` points at a time, each step
    optimised before the next; returns the time spent optimising. `dest` is closed and
    flushed when this returns; `shard` is left open. `progress` gets the points copied.

    Optimising such a shard in one call indexes its whole appendable segment as one HNSW
    graph, and at 1M points that graph lost filtered recall that segments built a step at
    a time keep (`bench.scale`'s recall@10; issue 12's closing note).
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    fresh = qe.EdgeShard.create(str(dest), config)
    try:
        for name, index in shard.info().payload_schema.items():
            params = index.params if index.params is not None else index.data_type
            fresh.update(qe.UpdateOperation.create_field_index(name, params))
        optimize_s = 0.0
        since = copied = 0
        offset = None
        while True:
            page, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=1_000, with_payload=True, with_vector=True)
            )
            if page:
                points = [qe.Point(p.id, p.vector, p.payload) for p in page]
                fresh.update(qe.UpdateOperation.upsert_points(points))
                since += len(page)
                copied += len(page)
            if since >= step or (offset is None and since):
                t0 = time.monotonic()
                fresh.optimize()
                optimize_s += time.monotonic() - t0
                trim_heap()
                since = 0
                if progress is not None:
                    progress(copied)
            if offset is None:
                break
        fresh.flush()
    finally:
        fresh.close()
    return optimize_s


def rebuild_in_steps(
    shard: qe.EdgeShard, path: Path, config: qe.EdgeConfig, step: int
) -> tuple[qe.EdgeShard, float]:
    """`rebuild_into` in place: returns the new shard (at `path`) and the optimise time."""
    fresh_path = path.with_name(path.name + ".rebuild")
    optimize_s = rebuild_into(shard, fresh_path, config, step)
    shard.close()
    shutil.rmtree(path)
    os.replace(fresh_path, path)
    return qe.EdgeShard.load(str(path), config), optimize_s
