"""With every ranking stage off, the read path against the commit before the stages.

Issue 28's target: "with every stage off, results and latency unchanged (same run, same
queries)". One index, bench.stage_cost's (real Django chunks embedded with MiniLM, each
point a noisy mix of two, tenants and ACLs as the API filters them, an `event_time` on
each; the shard as the service keeps it, optimised), built once by this checkout: the
storage code and the Qdrant Edge library are the same on both sides, so both open the
same files. One set of queries, their MiniLM vectors computed once and handed to every
round, so no model runs in a timed process.

Then rounds alternate the baseline (default `20bbff5^`, before the stages) and HEAD, at
least `--rounds` each, each a fresh child process in a git worktree of that commit (its
code first on PYTHONPATH). A round opens the shard (the optimiser off, as a restarted
service before its first cycle), warms up on other queries, then times
`Retriever.retrieve` as `POST /retrieve` calls it (the query's dense vector given, its
BM25 terms encoded by that commit's code, a key's tenant + ACL filter, `top_k` 5, section
grouping), every mode for each query in turn, and dumps every hit. HEAD's requests set
each stage off explicitly (`--head-stages default`: set none of them, as a request that
leaves them out).

Per mode: each side's p50 and p99 (the median over its rounds), HEAD's p50 over the
baseline's, and the share of queries whose hits are identical (ids and, for sections,
their chunks, in order) between the sides, averaged over every pair of rounds; beside
it the same share between two rounds of one side, since the engine returns exact score
ties in no fixed order, call to call. `identical_up_to_ties` compares the hits with
their scores, ties in a fixed order.

    .venv/bin/python -m bench.stages_off [--points 100000] [--rounds 3] [--baseline REV]
    .venv/bin/python -m bench.stages_off --quick   # a smoke run: 2,000 points, 2 rounds each

Writes bench/results/stages_off.json (`--out`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench._scale_material import Material, chunk_texts
from bench._scale_measure import bench_tuning
from bench.harness import RESULTS, ROOT, child_env, loadavg, pct, scratch_dir, write
from bench.stage_cost import load
from retrieval.encoders import SparseEncoder
from retrieval.store.edge.adapter import EdgeIndex

QUERY_POOL = 200  # held-out chunks the queries come from (bench.stage_cost's material)
MODES = ("hybrid", "dense", "sparse")
# The API key the rounds search as: tenant t0, group public (bench.scale's filter).
TENANT, GROUPS = "t0", ["public"]

# One round, run in a worktree of the commit measured with its code first on sys.path:
# only what both commits have (the stages' module only when HEAD's requests set them).
_ROUND = r'''
import json, sys, time
from pathlib import Path

spec = json.loads(Path(sys.argv[1]).read_text())
import retrieval.search as search
here = Path(search.__file__).resolve()
assert here.is_relative_to(Path.cwd().resolve()), f"not this commit's code: {here}"
from freshrag.settings import Settings
from retrieval.encoders import SparseEncoder
from retrieval.store.edge.adapter import EdgeIndex
from retrieval.store.edge.tuning import EdgeTuning

extra = {}
if spec["stages"] is not None:
    from retrieval.stages import Stages
    fusion = search.DEFAULT_RANKING.fusion
    stages = Stages()  # a request that sets none of them, as /retrieve passes it
    if spec["stages"] == "off":
        stages = Stages(fusion=fusion.method, dense_weight=fusion.dense_weight,
                        sparse_weight=fusion.sparse_weight, diversity=0.0, recency_s=0.0,
                        rerank=False)
    extra["stages"] = stages


class VectorsOnly:
    """Each query's dense vector comes with the call: no model in this process."""

    model_name = "all-MiniLM-L6-v2"

    def encode_query(self, text):
        raise AssertionError("a round asked the dense model for a query vector")

    def encode_headings(self, texts):
        raise AssertionError("a round asked the dense model for headings")


started = time.perf_counter()
tuning = EdgeTuning.from_settings(Settings(edge_optimizer="off"))
index = EdgeIndex(Path(spec["index"]), "chunks", "documents", tuning=tuning)
index.ensure_schema(spec["dim"])
open_s = time.perf_counter() - started
retriever = search.Retriever(index, VectorsOnly(), SparseEncoder())
who = search.Principal("bench", spec["tenant"], tuple(spec["groups"]))
modes, top_k, group = spec["modes"], spec["top_k"], spec["group"]


def ask(text, vector, mode):
    more = dict(extra, timings={}) if extra else {}
    return retriever.retrieve(who, text, top_k, mode, dense_vector=vector, group=group, **more)


for text, vector in zip(spec["warm_texts"], spec["warm_vectors"]):
    for mode in modes:
        ask(text, vector, mode)
ms = {mode: [] for mode in modes}
hits = {mode: [] for mode in modes}
for n, (text, vector) in enumerate(zip(spec["texts"], spec["vectors"])):
    turn = n % len(modes)
    for mode in modes[turn:] + modes[:turn]:
        t0 = time.perf_counter()
        found = ask(text, vector, mode)
        ms[mode].append((time.perf_counter() - t0) * 1000)
        hits[mode].append([
            [h.id + "".join(f"/{c}" for c in h.payload.get("chunks") or []), h.score]
            for h in found
        ])
points = index.chunks.info().points_count
index.close()
Path(spec["out"]).write_text(json.dumps(
    {"code": str(here), "open_s": open_s, "points": points, "ms": ms, "hits": hits}
))
'''


def commit_of(rev: str) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def worktree(commit: str) -> Path:
    """A detached checkout of `commit` (removed by `remove_worktree`)."""
    path = scratch_dir("freshrag-stages-off-src-")
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), commit],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return path


def remove_worktree(path: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def build(root: Path, m: Material, points: int) -> dict[str, float]:
    """bench.stage_cost's shard, optimised, closed: what every round opens."""
    index = EdgeIndex(root, "chunks", "documents", bench_tuning())
    try:
        index.ensure_schema(m.dim)
        started = time.monotonic()
        load(index, m, points, datetime.now(UTC).replace(microsecond=0))
        built = time.monotonic() - started
        started = time.monotonic()
        index.optimize(wait=True)
        return {"upsert_s": round(built, 1), "optimise_s": round(time.monotonic() - started, 1)}
    finally:
        index.close()


def query_texts(m: Material, base: int, n: int) -> list[str]:
    """The texts of Material's queries (its held-out chunks' opening words), checked
    against its BM25 terms so both name the same queries."""
    held_out = chunk_texts(base + QUERY_POOL)[base:]
    texts = [" ".join(t.split()[:12]) for t in held_out][:n]
    sparse = SparseEncoder()
    for text, terms in zip(texts, m.query_sparse, strict=False):
        assert sparse.encode_query(text) == terms, "query texts out of step with Material"
    return texts


def warm_queries(m: Material, n: int) -> tuple[list[str], list[list[float]]]:
    """Traffic that is not the measured queries (as bench._scale_material.warmup_queries):
    near a random base chunk, its opening words as the text."""
    rng = np.random.default_rng(7)
    picks = rng.integers(0, len(m.texts), n)
    v = m.vectors[picks] + 0.3 * m.vectors[rng.integers(0, len(m.texts), n)]
    v += rng.normal(0, 0.05, v.shape).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [" ".join(m.texts[b].split()[:12]) for b in picks], v.tolist()


def run_round(src: Path, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    spec_path = out.with_suffix(".spec.json")
    spec_path.write_text(json.dumps({**spec, "out": str(out)}))
    subprocess.run(
        [sys.executable, "-c", _ROUND, str(spec_path)], cwd=src, env=child_env(src), check=True
    )
    return json.loads(out.read_text())


def identical(a: list[list], b: list[list], ties: bool = False) -> float:
    """Share of queries whose hits are the same in the same order; `ties`: the same hits
    with the same scores, exact ties in a fixed order."""
    if ties:
        same = [sorted(x, key=lambda h: (-h[1], h[0])) == sorted(y, key=lambda h: (-h[1], h[0]))
                for x, y in zip(a, b, strict=True)]  # fmt: skip
    else:
        same = [[h[0] for h in x] == [h[0] for h in y] for x, y in zip(a, b, strict=True)]
    return sum(same) / len(same) if same else 1.0


def mean_over(pairs: list[tuple[dict, dict]], mode: str, ties: bool = False) -> float | None:
    if not pairs:
        return None
    return round(
        statistics.mean(identical(a["hits"][mode], b["hits"][mode], ties) for a, b in pairs), 4
    )


def summarise(rounds: dict[str, list[dict]], modes: list[str]) -> tuple[list[dict], dict]:
    """Rows per mode, and each round's p50 per side and mode."""
    rows, per_round = [], {}
    base, head = rounds["baseline"], rounds["head"]
    for mode in modes:
        p50 = {s: [pct(r["ms"][mode], 50, "linear") for r in rounds[s]] for s in rounds}
        p99 = {s: [pct(r["ms"][mode], 99, "linear") for r in rounds[s]] for s in rounds}
        b50, h50 = statistics.median(p50["baseline"]), statistics.median(p50["head"])
        cross = list(itertools.product(base, head))
        rows.append(
            {
                "mode": mode,
                "baseline_p50_ms": round(b50, 3),
                "head_p50_ms": round(h50, 3),
                "head_over_baseline_p50": round(h50 / b50, 3) if b50 else None,
                "baseline_p99_ms": round(statistics.median(p99["baseline"]), 3),
                "head_p99_ms": round(statistics.median(p99["head"]), 3),
                "identical_hits": mean_over(cross, mode),
                "identical_up_to_ties": mean_over(cross, mode, ties=True),
                "baseline_repeat_identical": mean_over(list(itertools.combinations(base, 2)), mode),
            }
        )
        per_round[mode] = {s: [round(x, 3) for x in p50[s]] for s in rounds}
    return rows, per_round


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--points", type=int, default=None, help="default 100000")
    ap.add_argument("--queries", type=int, default=None, help=f"at most {QUERY_POOL}; default 200")
    ap.add_argument("--warmup", type=int, default=None, help="other queries first; default 500")
    ap.add_argument("--rounds", type=int, default=None, help="per side; default 3")
    ap.add_argument("--base", type=int, default=None, help="real chunks the points derive from")
    ap.add_argument("--baseline", default="20bbff5^", help="the commit before the stages")
    ap.add_argument("--head", default="HEAD")
    ap.add_argument(
        "--head-stages",
        choices=["off", "default"],
        default="off",
        help="off: every stage set off in each request; default: none set",
    )
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--group", choices=["section", "chunk"], default="section")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2,000 points, 20 queries, 2 rounds"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "stages_off.json")
    args = ap.parse_args()
    quick = {"points": 2000, "queries": 20, "warmup": 20, "rounds": 2, "base": 300}
    full = {"points": 100_000, "queries": 200, "warmup": 500, "rounds": 3, "base": 2000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    modes = [m for m in args.modes.split(",") if m]
    if args.rounds < 1 or not set(modes) <= set(MODES):
        ap.error("--rounds must be at least 1 and --modes a list of hybrid, dense, sparse")
    commits = {"baseline": commit_of(args.baseline), "head": commit_of(args.head)}
    loadavg_start = loadavg()

    m = Material(args.base, QUERY_POOL)
    n = min(args.queries, QUERY_POOL)
    texts, vectors = query_texts(m, args.base, n), m.query_vectors[:n]
    warm_texts, warm_vectors = warm_queries(m, args.warmup)
    work = scratch_dir("freshrag-stages-off-")
    print(f"building the shard: {args.points:,} points", flush=True)
    built = build(work / "index", m, args.points)
    spec = {
        "index": str(work / "index"),
        "dim": m.dim,
        "tenant": TENANT,
        "groups": GROUPS,
        "modes": modes,
        "top_k": args.top_k,
        "group": args.group,
        "texts": texts,
        "vectors": vectors,
        "warm_texts": warm_texts,
        "warm_vectors": warm_vectors,
    }
    sources: dict[str, Path] = {}
    rounds: dict[str, list[dict]] = {"baseline": [], "head": []}
    try:
        for side, commit in commits.items():
            sources[side] = worktree(commit)
        for i in range(args.rounds):
            for side in ("baseline", "head"):
                stages = args.head_stages if side == "head" else None
                out = work / f"{side}-{i}.json"
                got = run_round(sources[side], {**spec, "stages": stages}, out)
                rounds[side].append(got)
                p50s = "  ".join(f"{md} {pct(got['ms'][md], 50, 'linear'):.3f}" for md in modes)
                print(f"round {i + 1} {side:8} {commits[side][:8]}: p50 ms {p50s}", flush=True)
    finally:
        for path in sources.values():
            remove_worktree(path)
    counts = {r["points"] for side in rounds.values() for r in side}
    assert counts == {args.points}, f"a round saw {counts} points, not {args.points}"
    rows, per_round = summarise(rounds, modes)
    result = {
        "benchmark": "stages_off",
        "commits": {
            "baseline": f"{commits['baseline'][:10]} ({args.baseline})",
            "head": f"{commits['head'][:10]} ({args.head})",
        },
        "head_stages": "every stage set off" if args.head_stages == "off" else "none set",
        "points": args.points,
        "queries": n,
        "warmup_queries": args.warmup,
        "rounds_each": args.rounds,
        "top_k": args.top_k,
        "group": args.group,
        "build": built,
        "open_s": {
            s: round(statistics.median(r["open_s"] for r in rs), 2) for s, rs in rounds.items()
        },
        "loadavg_start": loadavg_start,
        "loadavg_after": loadavg(),
        "rows": rows,
        "round_p50_ms": per_round,
    }
    for row in rows:
        print(
            f"{row['mode']:7} p50 {row['baseline_p50_ms']:.3f} -> {row['head_p50_ms']:.3f} ms "
            f"(x{row['head_over_baseline_p50']}), p99 {row['baseline_p99_ms']:.3f} -> "
            f"{row['head_p99_ms']:.3f}; identical {row['identical_hits']} "
            f"(up to ties {row['identical_up_to_ties']}, baseline repeat "
            f"{row['baseline_repeat_identical']})"
        )
    write(result, args.out, echo=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
