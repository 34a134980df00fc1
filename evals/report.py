"""The nightly report: one JSON, one self-contained HTML page, a terminal table, a history
folder, and the regression gate.

Everything an owner reads comes from one list of checks (`checks`): each threshold of
`thresholds.toml` applied to this run, with a status. A part of the evaluation that did
not run (`--probes 0`, `--no-answers`, a mode left out) is "skipped", never a regression.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import tomllib
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

THRESHOLDS = Path(__file__).with_name("thresholds.toml")
TEMPLATES = Path(__file__).with_name("templates")
MODES = ("hybrid", "dense", "sparse")
# Areas a run may leave out; their metrics are `area.name` (a mode is an area too).
OPTIONAL_AREAS = ("relevance", *MODES, "answers", "judge", "freshness", "replay", "index")
# A p50 that grows by more than this factor between two runs is marked in the report.
LATENCY_JUMP = 2.0
STATUS_ORDER = {"fail": 4, "warn": 3, "pass": 2, "skipped": 1, "n/a": 0, "info": 0}

# What an owner reads per area: (metric, label, brief). `{mode}` expands to each mode that
# ran. Brief rows make the cards and the terminal table; the report's checks table has all.
AREA_ROWS: dict[str, list[tuple[str, str, bool]]] = {
    "relevance": [
        ("{mode}.ndcg@10", "nDCG@10 {mode}", True),
        ("{mode}.recall@10", "recall@10 {mode}", True),
        ("{mode}.mrr@10", "MRR@10 {mode}", False),
        ("relevance.stale_hit_rate", "stale hits", True),
    ],
    "answers": [
        ("answers.answer_cites_gold", "cite a gold doc", True),
        ("answers.answer_refusal_rate", "refused", True),
        ("answers.unanswerable_refusal_rate", "refused when unanswerable", True),
        ("answers.false_refusal_rate", "refused when answerable", True),
        ("answers.answer_citation_precision", "citations on gold", False),
        ("answers.answer_cached_rate", "from the cache", False),
    ],
    "judge": [
        ("judge.faithfulness", "faithfulness", True),
        ("judge.answer_relevancy", "answer relevancy", True),
        ("judge.llm_context_precision", "context precision", True),
    ],
    "freshness": [
        ("freshness.freshness", "freshness score", True),
        ("freshness.lag_p50_s", "lag p50", True),
        ("freshness.lag_p95_s", "lag p95", True),
        ("freshness.lag_p99_s", "lag p99", False),
        ("freshness.missed_rate", "missed", True),
        ("freshness.deleted_returned", "deleted returned", True),
        ("freshness.stale_hit_rate", "stale hits", True),
    ],
    "latency": [
        ("{mode}.latency_p50_ms", "p50 {mode}", True),
        ("{mode}.latency_p95_ms", "p95 {mode}", False),
        ("answers.answer_latency_p50_ms", "p50 /answer", True),
        ("answers.answer_latency_p95_ms", "p95 /answer", False),
    ],
    "index": [
        ("index.documents", "documents", True),
        ("index.chunks", "chunks", True),
        ("index.dead_letters", "dead letters", True),
        ("index.backlog", "backlog", True),
    ],
    "replay": [
        ("replay.docs_changed", "docs changed", True),
        ("replay.chunks_reembedded", "chunks re-embedded", True),
        ("replay.reembedded_share", "share re-embedded", True),
        ("replay.update_seconds", "searchable after", True),
    ],
}
AREA_TITLES = {
    "relevance": "Relevance",
    "answers": "Answers",
    "judge": "Judged answers",
    "freshness": "Freshness",
    "latency": "Latency",
    "index": "Index state",
    "replay": "Release replay",
}
# The headline card's big number per area.
HEADLINE = {
    "relevance": "hybrid.ndcg@10",
    "answers": "answers.answer_cites_gold",
    "judge": "judge.faithfulness",
    "freshness": "freshness.freshness",
    "latency": "hybrid.latency_p50_ms",
    "index": "index.documents",
    "replay": "replay.chunks_reembedded",
}
TRENDS = [
    ("hybrid.ndcg@10", "nDCG@10 (hybrid)"),
    ("hybrid.recall@10", "recall@10 (hybrid)"),
    ("answers.answer_cites_gold", "answers citing gold"),
    ("freshness.freshness", "freshness score"),
    ("freshness.lag_p95_s", "publish→searchable p95 (s)"),
    ("hybrid.latency_p50_ms", "/retrieve p50 hybrid (ms)"),
]


# --- numbers --------------------------------------------------------------------------------


def _numbers(prefix: str, scores: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of `scores` (not booleans) as `prefix.key`."""
    return {
        f"{prefix}.{k}": v
        for k, v in scores.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def summarize(results: dict[str, Any]) -> dict[str, float]:
    """Flat `area.metric` → number: what the table, the trends and the gate read."""
    out: dict[str, float] = {}
    for mode, scores in results.get("relevance", {}).get("modes", {}).items():
        out.update(_numbers(mode, scores))
    if "relevance" in results:
        out["relevance.stale_hit_rate"] = results["relevance"]["stale_hit_rate"]
    for area in ("answers", "judge", "freshness", "replay", "index"):
        out.update(_numbers(area, results.get(area) or {}))
    answers = results.get("answers") or {}
    # Per provider (the one that answered; `none`: refused before any was asked).
    for provider, scores in (answers.get("by_provider") or {}).items():
        out.update(_numbers(f"answers.{provider}", scores))
    # Each provider asked alone (`freshrag eval --each-provider`).
    for provider, scores in (answers.get("alone") or {}).items():
        out.update(_numbers(f"answers.alone.{provider}", scores))
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


def skipped_areas(results: dict[str, Any]) -> dict[str, str]:
    """Area → why it did not run (`results["skipped"]`, set by the run, gives the reasons)."""
    given = results.get("skipped") or {}
    return {
        area: given.get(area) or ("mode not run" if area in MODES else "not run")
        for area in OPTIONAL_AREAS
        if not _area_ran(results, area)
    }


def _area_ran(results: dict[str, Any], area: str) -> bool:
    modes = results.get("relevance", {}).get("modes", {})
    if area == "relevance":
        return bool(modes)
    if area in MODES:
        return area in modes
    return bool(results.get(area))


def area_of(metric: str) -> str:
    return metric.split(".", 1)[0]


def load_thresholds(path: Path | None) -> dict[str, dict[str, float]]:
    if path is None or not path.exists():
        return {}
    return tomllib.loads(path.read_text())


def checks(
    summary: Mapping[str, float],
    previous: Mapping[str, float] | None,
    thresholds: Mapping[str, Mapping[str, float]],
    skipped: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every threshold applied to this run: status pass, fail, skipped or n/a.

    A metric whose area did not run is skipped. A metric missing from an area that ran
    fails ("missing"): the service stopped reporting it. A drop needs a previous value.
    """
    skipped = skipped or {}
    out: list[dict[str, Any]] = []

    def add(metric: str, rule: str, limit: float, status: str, **extra: Any) -> None:
        out.append(
            {
                "metric": metric,
                "value": summary.get(metric),
                "rule": rule,
                "limit": limit,
                "status": status,
                **extra,
            }
        )

    for rule in ("min", "max"):
        for metric, limit in thresholds.get(rule, {}).items():
            if area_of(metric) in skipped:
                add(metric, rule, limit, "skipped", reason=skipped[area_of(metric)])
            elif metric not in summary:
                add(metric, rule, limit, "fail", reason="missing")
            else:
                bad = summary[metric] < limit if rule == "min" else summary[metric] > limit
                add(metric, rule, limit, "fail" if bad else "pass")
    for metric, drop in thresholds.get("max_drop", {}).items():
        prev = (previous or {}).get(metric)
        if area_of(metric) in skipped:
            add(metric, "max_drop", drop, "skipped", reason=skipped[area_of(metric)])
        elif metric not in summary:
            add(metric, "max_drop", drop, "fail", reason="missing")
        elif prev is None:
            add(metric, "max_drop", drop, "n/a", reason="no previous value")
        else:
            bad = prev - summary[metric] > drop
            add(metric, "max_drop", drop, "fail" if bad else "pass", previous=prev)
    return out


def gate(
    summary: Mapping[str, float],
    previous: Mapping[str, float] | None,
    thresholds: Mapping[str, Mapping[str, float]],
    skipped: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The regressions: checks that failed. Skipped parts never count."""
    out = []
    for c in checks(summary, previous, thresholds, skipped):
        if c["status"] == "fail":
            rule = "missing" if c.get("reason") == "missing" else c["rule"]
            out.append(
                {k: v for k, v in c.items() if k not in ("status", "reason")} | {"rule": rule}
            )
    return out


def latency_jumps(
    summary: Mapping[str, float], previous: Mapping[str, float] | None, factor: float = LATENCY_JUMP
) -> list[dict[str, Any]]:
    """p50 latencies that grew more than `factor`× since the previous run (a mark, not a gate)."""
    out = []
    for metric, value in summary.items():
        if not metric.endswith("latency_p50_ms"):
            continue
        prev = (previous or {}).get(metric)
        if prev and value and value / prev > factor:
            out.append({"metric": metric, "value": value, "previous": prev, "ratio": value / prev})
    return out


def history(folder: Path) -> list[dict[str, Any]]:
    runs = []
    for f in sorted(folder.glob("*.json")):
        try:
            runs.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return runs


# --- formatting -------------------------------------------------------------------------------


def fmt(metric: str, value: Any) -> str:
    """A number the way an owner reads it: rates in %, seconds and ms with units, counts whole."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        return str(value)
    name = metric.rsplit(".", 1)[-1]
    if name.endswith("_ms"):
        return f"{value:.1f} ms" if value < 10 else f"{value:,.0f} ms"
    if name.endswith("_s") or name.endswith("seconds"):
        return f"{value:.2f} s" if value < 100 else f"{value:,.0f} s"
    if "rate" in name or "share" in name:
        return f"{value:.1%}"
    if name in (
        "documents",
        "chunks",
        "dead_letters",
        "backlog",
        "deleted_returned",
        "missed",
        "answer_timeouts",
        "provider_failures",
    ):
        return f"{value:,.0f}"
    if name.startswith(("docs_", "chunks_", "probes")):
        return f"{value:,.0f}"
    return f"{value:.3f}"


def rule_text(metric: str, rule: str, limit: float) -> str:
    if rule == "min":
        return f"≥ {fmt(metric, limit)}"
    if rule == "max":
        return f"≤ {fmt(metric, limit)}"
    return f"drop ≤ {fmt(metric, limit)}"


def _rows_for(area: str, results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    modes = list(results.get("relevance", {}).get("modes", {})) or ["hybrid"]
    rows: list[tuple[str, str, bool]] = []
    for metric, label, brief in AREA_ROWS.get(area, []):
        if "{mode}" in metric:
            rows += [(metric.format(mode=m), label.format(mode=m), brief) for m in modes]
        else:
            rows.append((metric, label, brief))
    return rows


def _display_area(metric: str) -> str:
    """Where a threshold's metric shows: latency metrics under Latency, mode scores under Relevance."""
    area = area_of(metric)
    if "latency" in metric:
        return "latency"
    if area in MODES:
        return "relevance"
    return area


def overview(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per area: its rows (value, thresholds, previous, status), status and headline.

    The terminal table and the report's cards both render this.
    """
    summary = results["summary"]
    previous = (results.get("previous") or {}).get("summary") or {}
    skipped = results.get("skipped_areas") or {}
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for c in results.get("checks", []):
        by_metric.setdefault(c["metric"], []).append(c)
    jumps = {j["metric"]: j for j in results.get("latency_jumps", [])}
    areas = []
    for area in ("relevance", "answers", "judge", "freshness", "latency", "index", "replay"):
        rows = _rows_for(area, results)
        listed = {m for m, _, _ in rows}
        rows += [
            (m, m, True) for m in by_metric if _display_area(m) == area and m not in listed
        ]  # a threshold on a metric no row shows still gets its line
        out_rows = []
        left_out: dict[str, str] = {}  # area whose metrics did not run → why
        for metric, label, brief in rows:
            cs = by_metric.get(metric, [])
            if area == "index" and not cs and results.get("index"):
                pass  # the index card lists what the service does not expose too: "n/a"
            elif metric not in summary and all(c["status"] == "skipped" for c in cs):
                if cs:
                    left_out[area_of(metric)] = cs[0].get("reason", "not run")
                continue  # nothing measured: one "skipped" line says it, not a row of n/a
            statuses = [c["status"] for c in cs]
            note = ""
            if metric in jumps:
                j = jumps[metric]
                statuses.append("warn")
                note = f"×{j['ratio']:.1f} since last run ({fmt(metric, j['previous'])})"
            status = max(statuses, key=STATUS_ORDER.get) if statuses else "info"
            out_rows.append(
                {
                    "metric": metric,
                    "label": label,
                    "value": fmt(metric, summary.get(metric)),
                    "threshold": ", ".join(rule_text(metric, c["rule"], c["limit"]) for c in cs),
                    "previous": fmt(metric, previous[metric]) if metric in previous else "",
                    "status": status,
                    "note": note,
                    # Gated or flagged rows are always brief: they are why the card has its colour.
                    "brief": brief or status in ("fail", "warn") or bool(cs),
                }
            )
        if area in ("judge", "replay") and not out_rows:
            continue  # optional extras: no card when not asked for
        skip = None
        if not out_rows:
            skip = skipped.get(area) or next(iter(left_out.values()), None) or "not run"
            if area == "latency" and "relevance" in skipped:
                skip = skipped["relevance"]
        statuses = [r["status"] for r in out_rows]
        status = max(statuses, key=STATUS_ORDER.get) if statuses else "skipped"
        if out_rows and status in ("info", "n/a"):
            status = "info"
        head = next((r for r in out_rows if r["metric"] == HEADLINE[area]), None)
        if head is None or head["value"] == "n/a":  # lead with what the service does expose
            head = next((r for r in out_rows if r["value"] != "n/a"), head)
        head = head or (out_rows[0] if out_rows else None)
        areas.append(
            {
                "area": area,
                "title": AREA_TITLES[area],
                "status": status,
                "skipped": skip,
                "partly_skipped": _grouped(left_out) if out_rows else "",
                "headline": head,
                "rows": out_rows,
            }
        )
    return areas


def _grouped(left_out: dict[str, str]) -> str:
    """{"dense": "mode not run", "sparse": "mode not run"} → "dense, sparse (mode not run)"."""
    by_reason: dict[str, list[str]] = {}
    for area, why in left_out.items():
        by_reason.setdefault(why, []).append(area)
    return "; ".join(f"{', '.join(areas)} ({why})" for why, areas in by_reason.items())


def terminal_table(results: dict[str, Any], report_path: Path | None = None) -> str:
    """The compact table `freshrag eval` prints: what a cron mail needs, no more."""
    prev = results.get("previous")
    lines = [
        f"FreshRAG eval {results['run_id']} against {results.get('service', '?')}: "
        f"{results.get('dataset', {}).get('questions', 0)} questions"
        + (f", compared with {prev['run_id']}" if prev else ", first run")
    ]
    head = f"{'':10} {'':26} {'value':>10}  {'threshold':<22} {'previous':>10}  status"
    lines += [head, "-" * len(head)]
    for a in overview(results):
        if a["skipped"]:
            lines.append(f"{a['area']:10} skipped ({a['skipped']})")
            continue
        if a["partly_skipped"]:
            lines.append(f"{'':10} skipped: {a['partly_skipped']}")
        if a["area"] == "index":
            st = results.get("index") or {}
            parts = [f"{r['label']} {r['value']}" for r in a["rows"]]
            parts.append(f"last indexed {st.get('last_indexed_at') or 'n/a'}")
            if st.get("ready") is False:
                parts.append("NOT READY")
            lines.append(f"{'index':10} " + ", ".join(parts))
            continue
        for n, r in enumerate(x for x in a["rows"] if x["brief"]):
            status = {"info": "", "n/a": "n/a", "fail": "FAIL", "warn": "WARN"}.get(
                r["status"], r["status"]
            )
            lines.append(
                f"{a['area'] if n == 0 else '':10} {r['label'][:26]:26} {r['value']:>10}  "
                f"{r['threshold'][:22]:<22} {r['previous']:>10}  {status}"
                + (f" ({r['note'].split(' (')[0]})" if r["note"] else "")
            )
    for row in providers_alone(results):
        cells = ", ".join(f"{label} {row[col]}" for col, label in ALONE_COLUMNS)
        lines.append(f"{'answers':10} {row['provider']} alone: {cells}")
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    counts = {
        s: sum(c["status"] == s for c in results.get("checks", []))
        for s in ("pass", "fail", "skipped")
    }
    tally = f"{counts['pass']} passed, {counts['skipped']} skipped"
    regressions = results.get("regressions", [])
    if regressions:
        names = ", ".join(r["metric"] for r in regressions)
        lines.append(f"verdict: REGRESSION: {names} ({tally})")
    else:
        lines.append(f"verdict: OK, no regression ({tally})")
    if report_path:
        lines.append(f"report: {report_path}")
    return "\n".join(lines)


# --- figures ----------------------------------------------------------------------------------


def _pyplot():  # noqa: ANN202
    """matplotlib, headless and quiet (no 'generated new fontManager' on a fresh cache)."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
            "figure.dpi": 100,
        }
    )
    return plt


def _png(fig) -> str:  # noqa: ANN001
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


COLORS = {"hybrid": "#2b6cb0", "dense": "#38a169", "sparse": "#dd6b20", "answer": "#805ad5"}
OP_COLORS = {"add": "#2b6cb0", "change": "#38a169", "delete": "#dd6b20"}


def _relevance_figure(plt, modes: dict[str, dict[str, Any]]) -> str:  # noqa: ANN001
    metrics = [
        ("ndcg@10", "nDCG@10"),
        ("mrr@10", "MRR@10"),
        ("recall@5", "recall@5"),
        ("recall@10", "recall@10"),
        ("id_based_context_precision", "context precision (ids)"),
        ("id_based_context_recall", "context recall (ids)"),
    ]
    metrics = [(k, label) for k, label in metrics if any(k in s for s in modes.values())]
    fig, ax = plt.subplots(figsize=(11, 3.4), layout="constrained")
    width = 0.8 / len(modes)
    for i, (mode, scores) in enumerate(modes.items()):
        xs = [x + (i - (len(modes) - 1) / 2) * width for x in range(len(metrics))]
        ys = [scores.get(k) or 0.0 for k, _ in metrics]
        bars = ax.bar(xs, ys, width * 0.92, label=mode, color=COLORS.get(mode))
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(metrics)), [label for _, label in metrics])
    ax.set_ylim(0, 1.12)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.grid(axis="y", alpha=0.3)
    # Above the axes, never over a bar.
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(modes), frameon=False)
    return _png(fig)


def _latency_figure(plt, modes: dict[str, dict[str, Any]], answer_ms: list[float]) -> str:  # noqa: ANN001
    import numpy as np

    series = [
        (f"/retrieve {m}", s.get("latencies_ms") or [], COLORS.get(m)) for m, s in modes.items()
    ]
    if answer_ms:
        series.append(("/answer (uncached)", answer_ms, COLORS["answer"]))
    series = [s for s in series if s[1]]
    fig, ax = plt.subplots(figsize=(11, 0.8 + 0.55 * len(series)), layout="constrained")
    rng = np.random.default_rng(0)
    everything = [v for _, vs, _ in series for v in vs]
    for i, (_, values, color) in enumerate(series):
        y = len(series) - 1 - i
        ax.boxplot(
            values,
            positions=[y],
            vert=False,
            widths=0.5,
            showfliers=False,
            medianprops={"color": "black"},
            boxprops={"color": color},
            whiskerprops={"color": color},
            capprops={"color": color},
        )
        ax.scatter(values, y + rng.uniform(-0.18, 0.18, len(values)), s=7, alpha=0.45, color=color)
        p50, p95 = np.percentile(values, 50), np.percentile(values, 95)
        ax.annotate(
            f"p50 {p50:,.1f} ms · p95 {p95:,.1f} ms",
            (1.0, y),
            xycoords=("axes fraction", "data"),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(range(len(series)), [s[0] for s in reversed(series)])
    if everything and max(everything) / max(min(everything), 0.01) > 30:
        ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _freshness_figure(plt, fresh: dict[str, Any]) -> str:  # noqa: ANN001
    import numpy as np

    samples = fresh.get("samples", [])
    lags = {
        op: [s["lag_s"] for s in samples if s["op"] == op and s["lag_s"] is not None]
        for op in ("add", "change", "delete")
    }
    everything = [v for vs in lags.values() for v in vs]
    fig, ax = plt.subplots(figsize=(11, 3.2), layout="constrained")
    if not everything:
        ax.text(0.5, 0.5, "no probe became searchable", ha="center", va="center", fontsize=12)
        ax.set_axis_off()
        return _png(fig)
    lo, hi = min(everything), max(everything)
    start = 0.0 if lo < 0.5 * hi else lo * 0.9
    span = max(hi - start, 1e-3)
    edges = np.histogram_bin_edges(
        everything, bins=min(30, max(8, len(everything) // 2)), range=(start, hi + span * 0.02)
    )
    ops = [op for op in lags if lags[op]]
    ax.hist(
        [lags[op] for op in ops],
        bins=edges,
        stacked=True,
        color=[OP_COLORS[op] for op in ops],
        label=[f"{op} ({len(lags[op])})" for op in ops],
        edgecolor="white",
        linewidth=0.5,
    )
    # Percentiles and the SLO go in the legend: labels on the plot collide when p95 ≈ p99.
    for p, color in ((50, "#2f855a"), (95, "#c05621"), (99, "#c53030")):
        v = float(np.percentile(everything, p, method="inverted_cdf"))
        ax.axvline(v, color=color, linestyle="--", linewidth=1.3, label=f"p{p} {v:.2f} s")
    slo = fresh.get("slo_s")
    right = hi + span * 0.08
    if slo is not None and slo <= right * 1.5:
        ax.axvline(slo, color="black", linewidth=1.6, label=f"SLO {slo:g} s")
        right = max(right, slo * 1.05)
    elif slo is not None:
        ax.plot([], [], " ", label=f"SLO {slo:g} s (off scale, right)")
    ax.set_xlim(start, right)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel(
        f"seconds from publish to searchable · missed {fresh.get('missed', 0)} of {len(samples)}"
    )
    ax.set_ylabel("probe events")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def _at(run: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(run.get("at", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


def _trends_figure(
    plt, runs: list[dict[str, Any]], thresholds: Mapping[str, Mapping[str, float]]
) -> str | None:  # noqa: ANN001
    import matplotlib.dates as mdates

    dated = [(t, r.get("summary", {})) for r in runs if (t := _at(r))]
    panels = [(m, label) for m, label in TRENDS if sum(m in s for _, s in dated) >= 1]
    if len(dated) < 2 or not panels:
        return None
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(11, 2.5 * rows), layout="constrained", squeeze=False
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_axis_off()
    first, last = min(t for t, _ in dated), max(t for t, _ in dated)
    pad = max((last - first) * 0.06, timedelta(seconds=30))
    for ax, (metric, label) in zip(axes.flat, panels, strict=False):
        ax.set_xlim(first - pad, last + pad)  # one time axis for all: a lone point stays in place
        pts = [(t, s[metric]) for t, s in dated if metric in s and s[metric] is not None]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", markersize=4, color="#2b6cb0")
        ax.set_title(label, loc="left")
        bounded = not metric.endswith(("_ms", "_s"))
        lo, hi = min(ys), max(ys)
        limits = [
            (rule, v)
            for rule in ("min", "max")
            if (v := thresholds.get(rule, {}).get(metric)) is not None
        ]
        if bounded:  # scores in [0, 1]: a dip of 0.008 must look like one
            bottom = min([lo] + [v for _, v in limits])
            bottom = max(0.0, min(bottom, hi - 0.1) - 0.05)
            ax.set_ylim(bottom, max(1.0, hi) + 0.02)
        else:  # times from zero, so twice as slow looks twice as high
            top = hi * 1.3 or 1.0
            for _, v in limits:
                if v <= 3 * hi:
                    top = max(top, v * 1.1)
            ax.set_ylim(0, top)
        for rule, v in limits:
            if ax.get_ylim()[0] <= v <= ax.get_ylim()[1]:
                ax.axhline(v, color="#c53030", linestyle="--", linewidth=1)
                ax.annotate(
                    f"{rule} {v:g}",
                    (0, v),
                    xycoords=("axes fraction", "data"),
                    xytext=(2, 2),
                    textcoords="offset points",
                    fontsize=7,
                    color="#c53030",
                )
            else:
                ax.annotate(
                    f"{rule} {v:g} (off scale)",
                    (0, 1),
                    xycoords="axes fraction",
                    xytext=(2, -10),
                    textcoords="offset points",
                    fontsize=7,
                    color="#c53030",
                )
        if (
            metric.endswith("latency_p50_ms")
            and len(ys) >= 2
            and ys[-2]
            and ys[-1] / ys[-2] > LATENCY_JUMP
        ):
            ax.plot(xs[-1], ys[-1], marker="^", markersize=10, color="#c53030")
            ax.annotate(
                f"×{ys[-1] / ys[-2]:.1f}",
                (xs[-1], ys[-1]),
                xytext=(-28, -4),
                textcoords="offset points",
                color="#c53030",
                fontsize=8,
                fontweight="bold",
            )
        locator = mdates.AutoDateLocator(minticks=2, maxticks=5)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _png(fig)


def figures(
    results: dict[str, Any],
    past: list[dict[str, Any]],
    thresholds: Mapping[str, Mapping[str, float]] | None = None,
) -> list[dict[str, str]]:
    plt = _pyplot()
    out: list[dict[str, str]] = []
    modes = results.get("relevance", {}).get("modes", {})
    if modes:
        out.append({"title": "Relevance by mode", "src": _relevance_figure(plt, modes)})
    answer_ms = [
        r["latency_ms"]
        for r in (results.get("answers") or {}).get("rows", [])
        if r.get("latency_ms") and not r.get("cached")
    ]
    if any(s.get("latencies_ms") for s in modes.values()) or answer_ms:
        out.append(
            {
                "title": "Latency per request (box: p25–p75, line: p50)",
                "src": _latency_figure(plt, modes, answer_ms),
            }
        )
    if results.get("freshness"):
        out.append(
            {
                "title": "Freshness: time from publish to searchable, per probe event",
                "src": _freshness_figure(plt, results["freshness"]),
            }
        )
    trend = _trends_figure(plt, [*past, results], thresholds or {})
    if trend:
        out.append({"title": "Trends (dashed red: thresholds)", "src": trend})
    return out


# --- HTML -------------------------------------------------------------------------------------


def worst_questions(results: dict[str, Any], limit: int = 10) -> list[dict[str, Any]]:
    """Per mode, the questions whose gold is not at rank 1 (missed first): failures only."""
    out = []
    for mode, questions in results.get("relevance", {}).get("questions", {}).items():
        failing = [q for q in questions if (q.get("ndcg@10") or 0.0) < 0.999]
        failing.sort(
            key=lambda q: (q.get("gold_rank") is not None, q.get("ndcg@10") or 0.0, q["id"])
        )
        out.append(
            {
                "mode": mode,
                "total": len(questions),
                "failing": len(failing),
                "rows": [
                    {
                        **q,
                        "retrieved": [
                            {"id": r, "gold": r in set(q.get("gold", []))}
                            for r in q.get("retrieved", [])
                        ],
                    }
                    for q in failing[:limit]
                ],
            }
        )
    return out


ALONE_COLUMNS = [
    ("answer_cites_gold", "cites gold"),
    ("answer_citation_precision", "citation precision"),
    ("unanswerable_refusal_rate", "unanswerable refused"),
    ("false_refusal_rate", "answerable refused"),
    ("provider_failures", "provider failures"),
    ("answer_latency_p50_ms", "p50"),
    ("answer_latency_p95_ms", "p95"),
]


def providers_alone(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per provider asked alone (`--each-provider`), formatted for the report."""
    alone = (results.get("answers") or {}).get("alone") or {}
    return [
        {"provider": name, **{col: fmt(col, scores.get(col)) for col, _ in ALONE_COLUMNS}}
        for name, scores in alone.items()
    ]


def answer_misses(results: dict[str, Any], limit: int = 10) -> dict[str, Any] | None:
    answers = results.get("answers")
    if not answers:
        return None
    rows = [r for r in answers.get("rows", []) if r.get("refused") or r.get("cites_gold") is False]
    return {"total": len(answers.get("rows", [])), "failing": len(rows), "rows": rows[:limit]}


def render_html(
    results: dict[str, Any],
    past: list[dict[str, Any]],
    thresholds: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = lambda v, metric="": fmt(metric, v)
    figs = figures(results, past, thresholds)
    replay = results.get("replay")
    return env.get_template("report.html.j2").render(
        r=results,
        areas=overview(results),
        figures=figs,
        worst=worst_questions(results),
        answer_misses=answer_misses(results),
        alone=providers_alone(results),
        alone_columns=ALONE_COLUMNS,
        replay=(
            [(k, fmt(f"replay.{k}", v)) for k, v in replay.items() if k != "label"]
            if replay
            else None
        ),
        index=results.get("index") or {},
        all_numbers=[
            (
                k,
                fmt(k, v),
                fmt(k, ((results.get("previous") or {}).get("summary") or {}).get(k))
                if k in ((results.get("previous") or {}).get("summary") or {})
                else "",
            )
            for k, v in sorted(results["summary"].items())
        ],
    )
