"""The README's table of `freshrag tune`'s result, made from bench/results/tune.json (never
typed): `python -m bench._tune_table` rewrites it between its markers, and
tests/test_docs.py fails when the README's copy differs from the JSON's."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "tune.json"
README = ROOT / "README.md"
BEGIN, END = "<!-- tune-table:begin -->", "<!-- tune-table:end -->"
SETS = {"dev": "Django dev", "heldout_faq": "Django held-out FAQ", "sphinx": "Sphinx (2nd corpus)"}


def readme_table(data: dict, variant: str = "keep 0.5") -> str:
    """Page MRR@10, base → tuned, hybrid and dense, per set and phrasing."""
    recipe = data["recipe"]
    load = ", ".join(f"{x:g}" for x in data["machine"]["loadavg"])
    command = "python -m " + data["command"].split(" -m ", 1)[-1]
    lines = [
        f"Page MRR@10, MiniLM → tuned ({recipe['steps']} steps, {variant}; `{command}`"
        f", load average {load}; named / paraphrased: whether the question uses its "
        "subject's names):",
        "",
        "| set | questions | hybrid base → tuned | Δ | dense base → tuned | Δ |",
        "|---|---:|---|---:|---|---:|",
    ]
    for corpus in data["corpora"].values():
        v = corpus["variants"][variant]
        for key, base in corpus["base"].items():
            name, part, mode = key.split("/")
            if mode != "hybrid":
                continue
            dense_key = f"{name}/{part}/dense"
            cells = []
            for k in (key, dense_key):
                b, t = corpus["base"][k]["page_mrr@10"], v["scores"][k]["page_mrr@10"]
                cells += [f"{b:.3f} → {t:.3f}", f"{t - b:+.3f}"]
            label = SETS.get(name, name) + ("" if part == "all" else f", {part}")
            lines.append(f"| {label} | {base['questions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def block(data: dict) -> str:
    return f"{BEGIN}\n{readme_table(data)}\n{END}"


def readme_block(readme: str) -> str | None:
    found = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), readme, re.DOTALL)
    return found.group(0) if found else None


def main() -> None:
    data = json.loads(RESULTS.read_text())
    text = README.read_text()
    current = readme_block(text)
    if current is None:
        raise SystemExit(f"README.md has no {BEGIN} … {END} block")
    README.write_text(text.replace(current, block(data)))


if __name__ == "__main__":
    main()
