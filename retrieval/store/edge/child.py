"""One optimisation cycle on the spare shard, as a separate, niced process:
`python -m retrieval.store.edge.child`, started by `EdgeOptimizer`.

Reads its command (JSON) from one line of stdin and writes its reply (JSON) as the last
line of stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import qdrant_edge as qe

from retrieval.background import die_with_parent
from retrieval.memory import rss_mb, trim_heap
from retrieval.store.edge.oplog import replay
from retrieval.store.edge.rebuild import needs_rebuild, rebuild_in_steps
from retrieval.store.edge.tuning import EdgeTuning, chunks_config
from retrieval.store.edge.warming import warm

_REINDEX_POINTS = 5_000  # fewer new points than this stay in the appendable segment


def main() -> None:
    """One optimisation cycle on the spare shard (run as a separate, niced process)."""
    die_with_parent()
    try:
        cmd = json.loads(sys.stdin.readline())
        tuning = EdgeTuning(**cmd["tuning"])
        os.nice(tuning.optimize_nice)
        spare, log_path = Path(cmd["dir"]), Path(cmd["log"])
        step = int(cmd["step"])  # the parent always sends it (tests make it smaller)
        config = chunks_config(cmd["dim"], tuning)
        shard = qe.EdgeShard.load(str(spare), config)
        optimize_s = 0.0
        rebuilt = needs_rebuild(shard.info(), step)
        if rebuilt:  # e.g. a shard filled before the optimiser existed
            shard, optimize_s = rebuild_in_steps(shard, spare, config, step)
        # A big backlog goes in steps, each sealed and indexed before the next: the child
        # never holds more than one step unindexed in RAM, and steps of about a segment's
        # size need no re-merging later.
        offset, replayed = replay(shard, log_path, 0, limit=step)
        rounds = 0
        while True:
            t0 = time.monotonic()
            shard.optimize()
            optimize_s += time.monotonic() - t0
            rounds += 1
            trim_heap()  # the step's build buffers: free them before the next step
            # What arrived meanwhile: replayed here, so the swap has only a short tail left;
            # indexed too when it is a lot (a backlog step, or writes during a long build).
            offset, n = replay(shard, log_path, offset, limit=step)
            replayed += n
            if n < _REINDEX_POINTS or (n < step and rounds >= 8):
                break
        rss, anon = rss_mb("VmHWM"), rss_mb("RssAnon")
        shard.flush()
        shard.close()
        t0 = time.monotonic()
        if cmd.get("copy_to"):  # the next spare, instead of the parent's old live copy
            shutil.rmtree(cmd["copy_to"], ignore_errors=True)
            shutil.copytree(spare, cmd["copy_to"])
        reply = {
            "ok": True,
            "offset": offset,
            "replayed_points": replayed,
            "optimize_s": optimize_s,
            "rebuilt": rebuilt,
            "child_copy_s": time.monotonic() - t0,
            "warm_s": warm(spare),
            "child_peak_rss_mb": rss,  # includes mapped file pages
            "child_rss_anon_mb": anon,
        }
    except Exception as exc:
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
