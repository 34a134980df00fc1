"""Freshness under load: how long after a one-sentence edit is published is it searchable?

A real worker on the bundled Tansu broker, as `freshrag up` runs it, over ≥ 200 Django
pages. Edits arrive at 1, 5, 10 and 20 per second for `--seconds` each; the lag of an
edit is the moment its version (or a newer one) is written to the index minus its
`event_time`. Then a backfill phase: the rest of the corpus is published to the backfill
topic while live edits keep arriving at `--backfill-rate`, to show a bulk load does not
delay live edits. Prints lag p50/p95/p99, the backlog left when each phase ends and the
time to drain it, and writes bench/results/freshness.json.

    .venv/bin/python bench/freshness.py [--docs 200] [--rates 1,5,10,20] [--seconds 60]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: its ingest.py would shadow the ingest package

from api.runtime import Core, EmbeddedBroker  # noqa: E402
from bench.harness import RESULTS, free_port, machine, pct, write  # noqa: E402
from freshrag.settings import Settings  # noqa: E402
from ingest.consumer import ensure_topics  # noqa: E402
from ingest.events import DocumentEvent  # noqa: E402
from ingest.publisher import Publisher, build_events  # noqa: E402
from ingest.sample import django_docs, doc_files  # noqa: E402


class LagClock:
    """Edits waiting to be written, and the lag of each once its version (or newer) lands."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.lock = threading.Lock()
        self.pending: dict[str, list[tuple[int, float]]] = {}
        self.lags: list[float] = []

    def published(self, doc_id: str, version: int, at: float) -> None:
        with self.lock:
            self.pending.setdefault(doc_id, []).append((version, at))

    def notify(self, tenant: str, doc_id: str) -> None:  # the worker's write hook
        now = time.time()
        state = self.core.index.get_document(tenant, doc_id)
        with self.lock:
            waiting = self.pending.get(doc_id, [])
            done = [(v, at) for v, at in waiting if state and state.version >= v]
            self.pending[doc_id] = [(v, at) for v, at in waiting if (v, at) not in done]
            self.lags.extend(now - at for _, at in done)

    def backlog(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.pending.values())

    def take(self) -> list[float]:
        with self.lock:
            out, self.lags = self.lags, []
            return out


def edit_stream(
    publisher: Publisher, pages: list[DocumentEvent], clock: LagClock, rate: float, seconds: float
) -> int:
    """One-sentence edits to random pages at `rate`/s; each a new version."""
    sent, started = 0, time.monotonic()
    rng = random.Random(7)
    while time.monotonic() - started < seconds:
        page = rng.choice(pages)
        version = time.time_ns() // 1000
        now = time.time()
        edit = page.model_copy(
            update={
                "version": version,
                "content": (page.content or "") + f"\n\nEdited sentence number {version}.\n",
                "event_time": datetime.fromtimestamp(now, UTC),
            }
        )
        clock.published(page.doc_id, version, now)
        publisher.publish([edit], progress=False)
        sent += 1
        time.sleep(max(0.0, (sent / rate) - (time.monotonic() - started)))
    return sent


def summary(lags: list[float]) -> dict:
    return {
        "edits_measured": len(lags),
        "lag_p50_s": round(pct(lags, 50), 3),
        "lag_p95_s": round(pct(lags, 95), 3),
        "lag_p99_s": round(pct(lags, 99), 3),
        "lag_max_s": round(max(lags, default=0.0), 3),
    }


def drain(clock: LagClock, limit_s: float = 600) -> float:
    started = time.monotonic()
    while clock.backlog() and time.monotonic() - started < limit_s:
        time.sleep(0.05)
    return round(time.monotonic() - started, 2)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--rates", default="1,5,10,20")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--backfill", type=int, default=400, help="pages in the backfill phase")
    ap.add_argument("--backfill-rate", type=float, default=5.0, help="live edits/s meanwhile")
    ap.add_argument("--out", type=Path, default=RESULTS / "freshness.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="freshrag-bench-"))
    broker = EmbeddedBroker(port=free_port(), log_path=tmp / "tansu.log").start()
    settings = Settings(
        data_dir=tmp,
        kafka_bootstrap_servers=broker.bootstrap,
        poll_timeout_ms=100,
        kafka_session_timeout_ms=6000,
        kafka_max_poll_interval_ms=6000,
    )
    result: dict = {"benchmark": "freshness", "docs": args.docs, "phases": {}}
    try:
        ensure_topics(settings)
        docs = django_docs(settings.sample_django_version, ROOT / "data" / "samples")
        files = doc_files(docs, args.docs + args.backfill)
        pages = build_events(
            files[: args.docs], root=docs, mime="text/x-rst", prefix="django/", version=1
        )
        backfill = build_events(
            files[args.docs :], root=docs, mime="text/x-rst", prefix="django/", version=1
        )
        core = Core.open(settings)
        indexer = core.indexer()
        print(f"indexing {len(pages)} pages…", flush=True)
        for i in range(0, len(pages), 16):
            indexer.apply(pages[i : i + 16])
        indexer.processor.close()
        clock = LagClock(core)
        core.watch = clock  # type: ignore[assignment]  # the worker's write hook
        worker = core.worker()
        thread = threading.Thread(target=worker.run, name="worker", daemon=True)
        thread.start()
        live = Publisher(settings.kafka_bootstrap_servers, settings.topic)
        # Warm up: the worker joined and its child processes are up.
        edit_stream(live, pages, clock, 2, 3)
        drain(clock, 300)
        clock.take()
        for rate in [float(r) for r in args.rates.split(",")]:
            load_before = machine()["loadavg"][0]
            sent = edit_stream(live, pages, clock, rate, args.seconds)
            backlog = clock.backlog()
            drain_s = drain(clock)
            phase = {
                "rate_per_s": rate,
                "seconds": args.seconds,
                "edits_sent": sent,
                **summary(clock.take()),
                "backlog_at_end": backlog,
                "drain_s": drain_s,
                "loadavg_1m": round(max(load_before, machine()["loadavg"][0]), 2),
            }
            result["phases"][f"{rate:g}/s"] = phase
            print(phase, flush=True)
        if backfill:
            bulk = Publisher(settings.kafka_bootstrap_servers, settings.backfill_topic)
            bulk.publish(backfill, progress=False)
            bulk.close()
            done_before = sum(1 for e in backfill if core.index.get_document("default", e.doc_id))
            sent = edit_stream(live, pages, clock, args.backfill_rate, args.seconds)
            backlog = clock.backlog()
            drain(clock)
            done_after = sum(1 for e in backfill if core.index.get_document("default", e.doc_id))
            phase = {
                "rate_per_s": args.backfill_rate,
                "backfill_pages": len(backfill),
                "backfill_pages_indexed_during_phase": done_after - done_before,
                "edits_sent": sent,
                **summary(clock.take()),
                "backlog_at_end": backlog,
                "loadavg_1m": machine()["loadavg"][0],
            }
            result["phases"]["during_backfill"] = phase
            print(phase, flush=True)
        worker.stop()
        thread.join(60)
        live.close()
        core.index.close()
    finally:
        broker.stop()
    write(result, args.out)


if __name__ == "__main__":
    main()
