"""The report's figures, as PNG data URIs for a self-contained page: relevance by mode,
latency per request, freshness lags, and the trends over past runs.

matplotlib is imported when a figure is drawn, never on import: the gate and the
terminal table do not pay for it.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from evals.gate import LATENCY_JUMP

# The trend panels, (metric, title): each one some run has a value for.
TRENDS = [
    ("hybrid.ndcg@10", "nDCG@10 (hybrid)"),
    ("hybrid.recall@10", "recall@10 (hybrid)"),
    ("answers.answer_cites_gold", "answers citing gold"),
    ("freshness.freshness", "freshness score"),
    ("freshness.lag_p95_s", "publish→searchable p95 (s)"),
    ("hybrid.latency_p50_ms", "/retrieve p50 hybrid (ms)"),
]


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
    """Each figure this run has data for: its title and its PNG as a data URI."""
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
