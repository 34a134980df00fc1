"""Serving and freshness while `freshrag tune` trains beside them: does a tune take the
CPU that queries and edits need?

The freshness benchmark's live service (a real worker and the API in one process on the
bundled Tansu broker, over Django pages), 2 query clients in another process and
one-line edits at 2/s (bench.freshness's `queries_during_edits`), in rounds of three
phases, the order reversed every other round:

- `none`: no tune, the round's baseline;
- `nice`: a tune training at niceness 10 alone (`FRESHRAG_TUNE_IDLE=false`,
  `FRESHRAG_TUNE_YIELD=false`);
- `idle`: a tune training under SCHED_IDLE (`FRESHRAG_TUNE_YIELD=false`);
- `yield`: the defaults: SCHED_IDLE, and the training process held stopped while the
  service encodes queries or has edits in hand (`FRESHRAG_TUNE_YIELD`,
  freshrag/tuning/yielding.py).

A tune phase starts once the training process has taken a step, and the tune is
cancelled when the phase ends. The tune's CPU (cores it used, from /proc) is measured
for a while with nothing else running, then during the phase: `tune_cpu_kept` is what the
load left it. The figures are ratios to the round's `none` phase: query p50/p99 and edit
lag p50/p99.

    .venv/bin/python -m bench.tune_load [--docs 200] [--seconds 60] [--rounds 2]

Writes bench/results/tune_load.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench.freshness import KEYS, live_phase, live_settings, start_live
from bench.harness import (
    RESULTS,
    command,
    index_pages,
    loadavg,
    sample_pages,
    scratch_dir,
    serve,
    write,
)
from freshrag.runtime import Core
from freshrag.settings import Settings
from freshrag.tuning.job import TuneJob
from ingest.broker import ensure_topics

POLICIES: dict[str, dict] = {  # phase → the settings its tune runs with
    "nice": {"tune_idle": False, "tune_yield": False},
    "idle": {"tune_idle": True, "tune_yield": False},
    "yield": {"tune_idle": True, "tune_yield": True},
}
RATIOS = ("query_p50_ms", "query_p99_ms", "lag_p50_s", "lag_p99_s")


def _cpu(job: TuneJob) -> tuple[float, float]:
    """(CPU seconds the training process has used, over all its threads; now)."""
    fields = Path(f"/proc/{job.pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK"), time.monotonic()


def _cores(before: tuple[float, float], after: tuple[float, float]) -> float:
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


def start_tune(settings: Settings, core: Core, update: dict, timeout_s: float = 600) -> TuneJob:
    """A tune of every tenant at this policy, returned once it has taken its first step
    (the model loaded, the trainer's threads up): what a phase measures is training."""
    tuned = settings.model_copy(update=update)
    busy = lambda: core.busy(tuned.tune_quiet_s)  # noqa: E731
    job = TuneJob(tuned, lambda: (core.index, settings.model), busy=busy)
    job.start(None, steps=5000, max_seconds=7200)
    deadline = time.monotonic() + timeout_s
    while job.status().get("step", 0) < 1:
        if job.status()["state"] != "training" or time.monotonic() > deadline:
            job.cancel()
            raise RuntimeError(f"the tune took no step: {job.status()}")
        time.sleep(0.5)
    return job


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    ap.add_argument("--alone", type=float, default=20.0, help="seconds of the tune alone")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=2, help="query clients")
    ap.add_argument("--rate", type=float, default=2.0, help="one-line edits per second")
    ap.add_argument("--out", type=Path, default=RESULTS / "tune_load.json")
    args = ap.parse_args()

    tmp = scratch_dir("freshrag-bench-")
    broker, settings = live_settings(tmp)
    result: dict = {
        "benchmark": "tune_load",
        "command": command(),
        "docs": args.docs,
        "phase_seconds": args.seconds,
        "clients": args.clients,
        "edits_per_s": args.rate,
        "settings": {
            "tune_nice": settings.tune_nice,
            "tune_threads": settings.tune_threads,
            "tune_batch_size": settings.tune_batch_size,
            "ingest_nice": settings.ingest_nice,
            "query_threads": settings.query_threads,
        },
        "rounds": [],
    }
    try:
        ensure_topics(settings)
        _, pages, _ = sample_pages(settings.sample_django_version, args.docs, 0)
        core = Core.open(settings)
        index_pages(core, pages)
        server = serve(core, KEYS)
        clock, worker, thread, live = start_live(core, pages, server.url)
        for r in range(args.rounds):
            order = ["none", *POLICIES] if r % 2 == 0 else [*reversed(POLICIES), "none"]
            phases: dict[str, dict] = {}
            for name in order:
                job = start_tune(settings, core, POLICIES[name]) if name != "none" else None
                if job is not None:
                    first = _cpu(job)
                    time.sleep(args.alone)
                    alone = _cores(first, before := _cpu(job))
                    held = job.status().get("paused_s", 0.0)
                phase = live_phase(
                    f"round {r + 1} {name}", core, live, pages, clock, rate=args.rate,
                    seconds=args.seconds, url=server.url, clients=args.clients,
                )  # fmt: skip
                if job is not None:
                    during = _cores(before, _cpu(job))
                    phase |= {
                        "tune_cores_alone": alone,
                        "tune_cores": during,
                        "tune_cpu_kept": round(during / max(alone, 1e-9), 2),
                        "tune_held_s": round(job.status().get("paused_s", 0.0) - held, 1),
                    }
                    job.cancel()
                phases[name] = phase
            for name in POLICIES:
                phases[name]["vs_none"] = {
                    k: round(phases[name][k] / max(phases["none"][k], 1e-9), 2) for k in RATIOS
                }
            result["rounds"].append(phases)
        result["summary"] = {
            name: {
                k: statistics.median(rd[name]["vs_none"][k] for rd in result["rounds"])
                for k in RATIOS
            }
            | {
                "tune_cpu_kept": statistics.median(
                    rd[name]["tune_cpu_kept"] for rd in result["rounds"]
                )
            }
            for name in POLICIES
        }
        result["loadavg_end"] = loadavg()
        worker.stop()
        thread.join(60)
        live.close()
        server.stop()
        core.index.close()
    finally:
        broker.stop()
    write(result, args.out)


if __name__ == "__main__":
    main()
