"""What the engine's ranking stages cost at scale: Qdrant Edge with 100k chunks, in-process.

Issue 28's target: diversity (MMR) and recency (the decay formula) each add at most 2 ms
p50 to a hybrid search. The points are bench.scale's (real Django chunks embedded with
MiniLM, each point a noisy mix of two, tenants and ACLs as the API filters them), each
with an `event_time` spread over two years; the shard as the service keeps it (its
tuning: HNSW, int8), optimised before timing. Each query runs every variant in turn (the
first variant rotating), with the read path's limit (30 chunks) and its tenant + ACL
filter; the query vectors are computed beforehand, so only the search is timed.

    .venv/bin/python -m bench.stage_cost [--points 100000] [--queries 200]

Writes bench/results/stage_cost.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench._scale_material import Material
from bench._scale_measure import FILTER, bench_tuning
from bench.harness import RESULTS, loadavg, pct, write
from retrieval.search import DEFAULT_RANKING
from retrieval.store.edge.adapter import EdgeIndex
from retrieval.store.types import Diversity, Fusion, Recency

LIMIT = 30  # chunks the read path asks for (FRESHRAG_SEARCH_CANDIDATES)
SPREAD = timedelta(days=730)  # event_time of the points: the last two years


def variants(now: str) -> dict[str, dict]:
    """Search arguments of each variant: the default, each engine stage, both."""
    fusion = DEFAULT_RANKING.fusion
    recency = Recency(30 * 86400.0, now)
    mmr = Diversity(0.3, 4 * LIMIT)  # as retrieval.search asks for it
    return {
        "off": {"fusion": fusion},
        "recency 30d": {"fusion": fusion, "recency": recency},
        "diversity 0.3": {"fusion": fusion, "diversity": mmr},
        "recency + diversity": {"fusion": fusion, "recency": recency, "diversity": mmr},
        "fusion dbsf": {
            "fusion": Fusion(fusion.k, fusion.dense_weight, fusion.sparse_weight, "dbsf")
        },
    }


def load(index: EdgeIndex, m: Material, n: int, now: datetime) -> None:
    rng = np.random.default_rng(28)
    for start in tqdm(range(0, n, 256), desc="upserting", unit="batch"):
        points = m.points(start, min(256, n - start), rng)
        for p in points:
            when = now - SPREAD * float(rng.random())
            p.payload["event_time"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        index.upsert_chunks(points)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200, help="at most 200")
    ap.add_argument("--base", type=int, default=2000, help="real chunks the points derive from")
    ap.add_argument("--out", type=Path, default=RESULTS / "stage_cost.json")
    ap.add_argument("--workdir", type=Path, default=None, help="where the shard goes (a temp dir)")
    args = ap.parse_args()
    m = Material(args.base, min(args.queries, 200))
    work = Path(tempfile.mkdtemp(prefix="freshrag-stage-cost-", dir=args.workdir))
    index = EdgeIndex(work, "chunks", "documents", bench_tuning())
    try:
        index.ensure_schema(m.dim)
        now = datetime.now(UTC).replace(microsecond=0)
        load(index, m, args.points, now)
        started = time.monotonic()
        index.optimize(wait=True)
        optimise_s = time.monotonic() - started
        runs = variants(now.isoformat().replace("+00:00", "Z"))
        names = list(runs)
        ms: dict[str, list[float]] = {name: [] for name in names}
        queries = list(zip(m.query_vectors, m.query_sparse, strict=True))
        for dv, sv in queries[:20]:  # warm-up, not timed
            for name in names:
                index.search("hybrid", dv, sv, FILTER, LIMIT, **runs[name])
        for n, (dv, sv) in enumerate(tqdm(queries, desc="timing", unit="query")):
            turn = n % len(names)
            for name in names[turn:] + names[:turn]:
                t0 = time.perf_counter()
                index.search("hybrid", dv, sv, FILTER, LIMIT, **runs[name])
                ms[name].append((time.perf_counter() - t0) * 1000)
        base = pct(ms["off"], 50, "linear")
        rows = [
            {
                "variant": name,
                "p50_ms": round(pct(ms[name], 50, "linear"), 3),
                "p99_ms": round(pct(ms[name], 99, "linear"), 3),
                "added_p50_ms": round(pct(ms[name], 50, "linear") - base, 3),
            }
            for name in names
        ]
        result = {
            "benchmark": "stage_cost",
            "points": args.points,
            "queries": len(queries),
            "limit": LIMIT,
            "optimise_s": round(optimise_s, 1),
            "loadavg_after": loadavg(),
            "rows": rows,
        }
    finally:
        index.close()
        shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        print(
            f"{row['variant']:22} p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms  +{row['added_p50_ms']:.3f}"
        )
    write(result, args.out, echo=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
