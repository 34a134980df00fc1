"""What the embedded broker's durability costs a publisher: disk (the default) against
memory, in the same run.

Both brokers run side by side (each the bundled Tansu on its own port; the disk one
through its loopback S3 server, as `freshrag up` starts it). Rounds alternate between them
so drift hits both: one-event publishes (each waits for the broker's acks, as
`POST /documents` does) and batches of 100 events of ~1 kB. The durability itself is
tested, not measured here (tests/freshrag/test_durable_broker.py).

Writes bench/results/broker.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.harness import RESULTS, free_port, loadavg, pct, scratch_dir, write
from freshrag.runtime import EmbeddedBroker
from freshrag.settings import Settings
from ingest.broker import ensure_topics
from ingest.events import DocumentEvent
from ingest.publisher import Publisher


def events(n: int, start: int, size: int = 1000) -> list[DocumentEvent]:
    body = ("freshness " * (size // 10))[:size]
    return [
        DocumentEvent(op="upsert", doc_id=f"doc-{start + i}", version=start + i, content=body)
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds per broker")
    ap.add_argument("--singles", type=int, default=100, help="one-event publishes a round")
    ap.add_argument("--batches", type=int, default=5, help="batches of 100 a round")
    ap.add_argument("--out", type=Path, default=RESULTS / "broker.json")
    args = ap.parse_args()

    tmp = scratch_dir("freshrag-bench-broker-")
    brokers = {
        "disk": EmbeddedBroker(
            port=free_port(), log_path=tmp / "disk.log", storage_dir=tmp / "broker"
        ),
        "memory": EmbeddedBroker(port=free_port(), log_path=tmp / "memory.log"),
    }
    single_ms: dict[str, list[float]] = {name: [] for name in brokers}
    batch_rate: dict[str, list[float]] = {name: [] for name in brokers}
    load_before = loadavg()[0]
    try:
        publishers = {}
        for name, broker in brokers.items():
            broker.start()
            ensure_topics(Settings(kafka_bootstrap_servers=broker.bootstrap))
            publishers[name] = Publisher(broker.bootstrap, Settings().topic)
            publishers[name].publish(events(20, 0), progress=False)  # connected, warm
        n = 1_000_000
        for r in range(args.rounds):
            for name in list(brokers) if r % 2 == 0 else list(brokers)[::-1]:
                pub = publishers[name]
                for _ in range(args.singles):
                    batch = events(1, n)
                    n += 1
                    t = time.perf_counter()
                    pub.publish(batch, progress=False)
                    single_ms[name].append((time.perf_counter() - t) * 1000)
                for _ in range(args.batches):
                    batch = events(100, n)
                    n += 100
                    t = time.perf_counter()
                    pub.publish(batch, progress=False)
                    batch_rate[name].append(100 / (time.perf_counter() - t))
            print(f"round {r + 1}/{args.rounds}", flush=True)
        for pub in publishers.values():
            pub.close()
    finally:
        for broker in brokers.values():
            broker.stop()
    modes = {
        name: {
            "single_publishes": len(single_ms[name]),
            "single_p50_ms": round(pct(single_ms[name], 50), 1),
            "single_p99_ms": round(pct(single_ms[name], 99), 1),
            "batch_of_100_events_per_s_p50": round(pct(batch_rate[name], 50)),
        }
        for name in brokers
    }
    result = {
        "benchmark": "broker",
        "event_bytes": 1000,
        "rounds": args.rounds,
        "modes": modes,
        "disk_vs_memory_single_p50": round(
            modes["disk"]["single_p50_ms"] / modes["memory"]["single_p50_ms"], 2
        ),
        "loadavg_1m": round(max(load_before, loadavg()[0]), 2),
    }
    write(result, args.out)


if __name__ == "__main__":
    main()
