"""The nightly report: one JSON, one self-contained HTML page, a history folder, a regression gate."""

from __future__ import annotations

import base64
import html
import io
import json
import tomllib
from pathlib import Path
from typing import Any

HEADLINE = [
    ("hybrid.ndcg@10", "nDCG@10 (hybrid)", "{:.3f}"),
    ("hybrid.recall@10", "recall@10 (hybrid)", "{:.3f}"),
    ("freshness.freshness", "freshness score", "{:.3f}"),
    ("freshness.lag_p95_s", "change→searchable p95", "{:.2f} s"),
    ("freshness.deleted_returned", "deleted docs returned", "{:.0f}"),
    ("freshness.stale_hit_rate", "stale-hit rate", "{:.2%}"),
]
THRESHOLDS = Path(__file__).with_name("thresholds.toml")
TRENDS = ["hybrid.ndcg@10", "hybrid.recall@10", "freshness.freshness", "freshness.lag_p95_s"]


def summarize(results: dict[str, Any]) -> dict[str, float]:
    """Flat `area.metric` → number: what the table, the trends and the gate read."""
    out: dict[str, float] = {}
    for mode, scores in results.get("relevance", {}).get("modes", {}).items():
        for k, v in scores.items():
            if isinstance(v, int | float):
                out[f"{mode}.{k}"] = v
    if "relevance" in results:
        out["relevance.stale_hit_rate"] = results["relevance"]["stale_hit_rate"]
    for area in ("answers", "judge", "freshness", "replay"):
        for k, v in (results.get(area) or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[f"{area}.{k}"] = v
    return out


def load_thresholds(path: Path | None) -> dict[str, dict[str, float]]:
    if path is None or not path.exists():
        return {}
    return tomllib.loads(path.read_text())


def gate(
    summary: dict[str, float],
    previous: dict[str, float] | None,
    thresholds: dict[str, dict[str, float]],
) -> list[dict[str, Any]]:
    """Violations of absolute limits ([min], [max]) and of allowed drops against the last run."""
    out = []
    for metric, limit in thresholds.get("min", {}).items():
        if metric in summary and summary[metric] < limit:
            out.append({"metric": metric, "value": summary[metric], "rule": "min", "limit": limit})
        elif metric not in summary and not metric.startswith(("replay.", "answers.")):
            out.append({"metric": metric, "value": None, "rule": "missing", "limit": limit})
    for metric, limit in thresholds.get("max", {}).items():
        if metric in summary and summary[metric] > limit:
            out.append({"metric": metric, "value": summary[metric], "rule": "max", "limit": limit})
    for metric, drop in thresholds.get("max_drop", {}).items():
        if (
            previous
            and metric in summary
            and metric in previous
            and previous[metric] - summary[metric] > drop
        ):
            out.append(
                {
                    "metric": metric,
                    "value": summary[metric],
                    "rule": "max_drop",
                    "limit": drop,
                    "previous": previous[metric],
                }
            )
    return out


def history(folder: Path) -> list[dict[str, Any]]:
    runs = []
    for f in sorted(folder.glob("*.json")):
        try:
            runs.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return runs


# --- HTML ---------------------------------------------------------------------------------


def _png(fig) -> str:  # noqa: ANN001
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figures(results: dict[str, Any], past: list[dict[str, Any]]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs: list[tuple[str, str]] = []
    modes = results.get("relevance", {}).get("modes", {})
    if modes:
        metrics = [
            "ndcg@10",
            "mrr@10",
            "recall@10",
            "id_based_context_precision",
            "id_based_context_recall",
        ]
        fig, ax = plt.subplots(figsize=(8, 3.2))
        width = 0.8 / len(modes)
        for i, (mode, scores) in enumerate(modes.items()):
            ax.bar(
                [x + i * width for x in range(len(metrics))],
                [scores.get(m) or 0 for m in metrics],
                width,
                label=mode,
            )
        ax.set_xticks(
            [x + width * (len(modes) - 1) / 2 for x in range(len(metrics))],
            metrics,
            fontsize=7,
            rotation=12,
        )
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.set_title("Relevance by mode")
        figs.append(("Relevance by mode", _png(fig)))

        fig, ax = plt.subplots(figsize=(8, 3))
        for mode, scores in modes.items():
            ax.hist(scores.get("latencies_ms", []), bins=30, alpha=0.6, label=mode)
        ax.set_xlabel("/retrieve latency (ms)")
        ax.legend(fontsize=8)
        ax.set_title("Latency")
        figs.append(("Latency histogram", _png(fig)))
    fresh = results.get("freshness")
    if fresh:
        fig, ax = plt.subplots(figsize=(8, 3))
        for op in ("add", "change", "delete"):
            lags = [
                s["lag_s"] for s in fresh["samples"] if s["op"] == op and s["lag_s"] is not None
            ]
            ax.hist(lags, bins=20, alpha=0.6, label=f"{op} ({len(lags)})")
        ax.axvline(fresh["slo_s"], color="red", linestyle="--", label=f"SLO {fresh['slo_s']} s")
        ax.set_xlabel("seconds from publish to searchable")
        ax.legend(fontsize=8)
        ax.set_title(f"Freshness lag (missed: {fresh['missed']})")
        figs.append(("Freshness lag distribution", _png(fig)))
    runs = past + [results]
    fig, axes = plt.subplots(1, len(TRENDS), figsize=(10, 2.6))
    for ax, metric in zip(axes, TRENDS, strict=True):
        ys = [r.get("summary", {}).get(metric) for r in runs]
        ax.plot(range(len(ys)), [y if y is not None else float("nan") for y in ys], marker="o")
        ax.set_title(metric, fontsize=8)
        ax.set_xticks(range(len(ys)), [str(i + 1) for i in range(len(ys))])
        ax.set_xlabel("run", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle("Trends across runs", fontsize=9)
    figs.append(("Trends", _png(fig)))
    return figs


def render_html(results: dict[str, Any], past: list[dict[str, Any]]) -> str:
    esc = html.escape
    summary, previous = results["summary"], (results.get("previous") or {}).get("summary") or {}
    regressions = results["regressions"]
    status = "REGRESSION" if regressions else "OK"
    cards = []
    for key, label, fmt in HEADLINE:
        if key in summary:
            prev = previous.get(key)
            delta = "" if prev is None else f"<small>prev {fmt.format(prev)}</small>"
            cards.append(
                f'<div class="card"><div class="label">{esc(label)}</div>'
                f'<div class="value">{fmt.format(summary[key])}</div>{delta}</div>'
            )
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{v:.4g}</td><td>{'' if previous.get(k) is None else f'{previous[k]:.4g}'}</td></tr>"
        for k, v in sorted(summary.items())
    )
    reg = "".join(
        f"<li><b>{esc(r['metric'])}</b> = {r['value']} breaks {r['rule']} {r['limit']}</li>"
        for r in regressions
    )
    figs = "".join(
        f'<figure><img alt="{esc(t)}" src="{src}"><figcaption>{esc(t)}</figcaption></figure>'
        for t, src in _figures(results, past)
    )
    worst = ""
    questions = results.get("relevance", {}).get("questions", {})
    mode = "hybrid" if "hybrid" in questions else next(iter(questions), None)
    if mode:
        ranked = sorted(questions[mode], key=lambda q: (q["ndcg@10"], q["id"]))[:10]
        worst = "".join(
            f"<tr><td>{esc(q['question'])}</td><td>{q['ndcg@10']:.2f}</td><td>{esc(', '.join(q['gold']))}</td>"
            f"<td><ol>{''.join(f'<li>{esc(r)}</li>' for r in q['retrieved'])}</ol></td></tr>"
            for q in ranked
        )
    replay = results.get("replay")
    replay_html = ""
    if replay:
        replay_html = "<h2>Release replay: {}</h2><table>{}</table>".format(
            esc(replay["label"]),
            "".join(
                f"<tr><td>{esc(k)}</td><td>{esc(str(v))}</td></tr>"
                for k, v in replay.items()
                if k != "label"
            ),
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FreshRAG evaluation {esc(results["run_id"])}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}}
.status{{display:inline-block;padding:.3rem .8rem;border-radius:4px;color:#fff;
background:{"#c0392b" if regressions else "#27ae60"}}}
.cards{{display:flex;flex-wrap:wrap;gap:1rem;margin:1rem 0}}
.card{{border:1px solid #ddd;border-radius:6px;padding:.8rem 1rem;min-width:150px}}
.label{{font-size:.8rem;color:#666}} .value{{font-size:1.6rem;font-weight:600}}
table{{border-collapse:collapse;font-size:.85rem}} td,th{{border-bottom:1px solid #eee;padding:.3rem .6rem;text-align:left;vertical-align:top}}
figure{{margin:1rem 0}} img{{max-width:100%}}
</style></head>
<body>
<h1>FreshRAG evaluation <span class="status">{status}</span></h1>
<p>Run {esc(results["run_id"])} at {esc(results["at"])} against {esc(results["service"])};
dataset {esc(results.get("dataset", {}).get("name", "-"))} ({results.get("dataset", {}).get("questions", 0)} questions).</p>
<div class="cards">{"".join(cards)}</div>
{f"<h2>Regressions</h2><ul>{reg}</ul>" if regressions else ""}
<h2>Figures</h2>{figs}
<h2>Worst questions ({esc(mode or "-")})</h2>
<table><tr><th>question</th><th>nDCG@10</th><th>gold</th><th>retrieved</th></tr>{worst}</table>
{replay_html}
<h2>All numbers</h2><table><tr><th>metric</th><th>this run</th><th>previous</th></tr>{rows}</table>
<script>
window.addEventListener("load", () => {{
  const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.figuresLoaded = ok;
}});
</script>
</body></html>
"""
