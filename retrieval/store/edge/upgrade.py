"""The offline rebuild behind `freshrag optimize`: a shard filled without the optimiser,
indexed with the service stopped."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from retrieval.memory import trim_heap
from retrieval.store.edge import rebuild
from retrieval.store.edge.layout import (
    live_dir,
    load_state,
    op_logs,
    other_dir,
    save_state,
    state_path,
)
from retrieval.store.edge.lock import ShardBusy, lock_collection
from retrieval.store.edge.tuning import EdgeTuning, chunks_config
from retrieval.store.schema import DENSE


def upgrade_offline(
    root: Path,
    collection: str,
    tuning: EdgeTuning,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    step: int | None = None,
) -> dict[str, Any]:
    """Rebuilds, optimised, a chunks shard that holds many points no optimisation has
    indexed, with the service stopped (`freshrag optimize`).

    The service can do it while it serves (its first cycle rebuilds a copy in the child),
    but the shard it then closes holds that unindexed segment in RAM, and freeing it holds
    the GIL: 1.3 s at 1M points (`bench.scale`). Done here, the service never opens it.
    The result becomes the live dir through the state file (so a crash midway leaves the
    old shard live); the old dir is deleted, and the service copies the new one as its
    spare when it starts. `progress(done, total)` gets the points copied so far; `step`
    is the points indexed at a time (and how many unindexed ones make it worth doing).
    """
    step = step or rebuild.REPLAY_STEP
    if not root.is_dir():
        return {"points": 0, "rebuilt": False, "optimize_s": 0.0}
    # Held until the old dir is gone: a service starting meanwhile stops at the lock.
    lock = lock_collection(root, collection)
    try:
        return _upgrade_locked(root, collection, tuning, threads, progress, step)
    finally:
        os.close(lock)


def _upgrade_locked(
    root: Path,
    collection: str,
    tuning: EdgeTuning,
    threads: int | None,
    progress: Callable[[int, int], None] | None,
    step: int,
) -> dict[str, Any]:
    state_file = state_path(root, collection)
    live = live_dir(root, collection, load_state(state_file))
    config_path = live / "edge_config.json"
    if not config_path.exists():
        return {"points": 0, "rebuilt": False, "optimize_s": 0.0}
    try:
        dim = json.loads(config_path.read_text())["vectors"][DENSE]["size"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"{config_path} is not a chunks shard's config: {exc}") from exc
    threads = threads or len(os.sched_getaffinity(0))
    config = chunks_config(dim, replace(tuning, optimize_threads=threads))
    try:
        shard = qe.EdgeShard.load(str(live), config)
    except Exception as exc:
        if "WouldBlock" in str(exc):  # Edge's WAL lock
            raise ShardBusy(f"{live} is open in another process") from exc
        raise
    try:
        info = shard.info()
        points = info.points_count
        if not rebuild.needs_rebuild(info, step):
            return {"points": points, "rebuilt": False, "optimize_s": 0.0}
        dest = other_dir(root, collection, live)
        # `dest` may be the spare of a service that ran once: from here on it is no
        # copy of the live shard, whatever happens to this run.
        save_state(state_file, live.name, None, spare_valid=False)
        if progress is not None:
            progress(0, points)
        report = None if progress is None else (lambda done: progress(done, points))
        optimize_s = rebuild.rebuild_into(shard, dest, config, step, report)
        save_state(state_file, dest.name, None, spare_valid=False)
    finally:
        shard.close()
    shutil.rmtree(live)
    for old_log in op_logs(root, collection):
        old_log.unlink()
    trim_heap()
    return {"points": points, "rebuilt": True, "optimize_s": optimize_s}
