"""reST parse and chunk cost per page: the doctree walker against the old HTML round trip.

Both paths run in the same process over the same Django pages, interleaved page by page
so load drift hits both alike:

- new: `ingest.parser.parse(text, "text/x-rst")` (docutils doctree → elements), then
  `ingest.chunker.Chunker`;
- old: `ingest.rst.parse_via_html` (docutils → HTML → unstructured `partition_html` with
  spaCy classification), then the previous chunker (elements → Markdown → llama-index
  `MarkdownNodeParser` → `SentenceSplitter`), reproduced below as the baseline.

    .venv/bin/python -m bench.parse [--docs 240] [--chunk-size 192]

Prints ms/page (median, p95, mean) for both and the ratios; writes bench/results/parse.json.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import RESULTS, SAMPLES, loadavg, pct, write
from ingest.chunker import Chunker
from ingest.parser import Element, parse
from ingest.rst import parse_via_html
from ingest.sample import django_docs, doc_files

TARGET_PARSE_MEDIAN_MS = 20.0


class LegacyChunker:
    """The chunker before the parser rewrite, verbatim in behaviour: the baseline's second half."""

    def __init__(self, chunk_size: int, chunk_overlap: int = 0) -> None:
        from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

        self._sections = MarkdownNodeParser(include_metadata=True, include_prev_next_rel=False)
        self._splitter = SentenceSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, include_prev_next_rel=False
        )

    @staticmethod
    def _markdown(elements: list[Element]) -> str:
        parts: list[str] = []
        for e in elements:
            text = e.text.strip()
            if e.category == "Title":
                parts.append("## " + " ".join(text.split()))
            elif e.category == "CodeSnippet":
                parts.append("```\n" + text.replace("```", "'''") + "\n```")
            elif e.category == "ListItem":
                parts.append("- " + text)
            else:
                parts.append(text)
        return "\n\n".join(parts)

    def chunk(self, elements: list[Element]) -> list[tuple[str, str]]:
        """(section heading, text) per chunk."""
        from llama_index.core import Document

        markdown = self._markdown(elements)
        if not markdown.strip():
            return []
        out: list[tuple[str, str]] = []
        for section in self._sections.get_nodes_from_documents([Document(text=markdown)]):
            first = section.text.lstrip().split("\n", 1)[0]
            heading = first.lstrip("#").strip() if first.startswith("#") else ""
            parts = self._splitter.get_nodes_from_documents([Document(text=section.text)])
            for k, node in enumerate(parts):
                text = node.text.strip()
                if text:
                    out.append((heading, f"## {heading}\n\n{text}" if k and heading else text))
        return out


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - started) * 1000


def _stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median": round(statistics.median(ordered), 2),
        "p95": round(pct(ordered, 95, "floor"), 2),
        "mean": round(statistics.fmean(ordered), 2),
        "total_s": round(sum(ordered) / 1000, 2),
    }


def _title_only(text: str) -> bool:
    """A chunk that is nothing but heading lines."""
    return all(line.startswith("#") for line in text.splitlines() if line.strip())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=240, help="Django doc pages (at least 200)")
    ap.add_argument("--django", default="5.2.8", help="Django release of the sample")
    ap.add_argument("--chunk-size", type=int, default=192, help="as FRESHRAG_CHUNK_SIZE")
    ap.add_argument("--out", type=Path, default=RESULTS / "parse.json")
    args = ap.parse_args()

    load_at_start = loadavg()
    docs = django_docs(args.django, SAMPLES)
    files = doc_files(docs, args.docs)
    pages = [f.read_text(encoding="utf-8") for f in files]
    chunker, legacy = Chunker(args.chunk_size, 0), LegacyChunker(args.chunk_size, 0)

    # Warm up both paths (spaCy, tokenizers, the sentence splitter, docutils' lazy imports)
    # outside the timing: the longest page, and one paragraph too long for a single chunk.
    warm = max(pages, key=len)
    long_paragraph = [Element("NarrativeText", "A sentence about warming up. " * 400)]
    chunker.chunk(parse(warm, "text/x-rst"))
    chunker.chunk(long_paragraph)
    legacy.chunk(parse_via_html(warm))
    legacy.chunk(long_paragraph)

    times: dict[str, list[float]] = {
        k: [] for k in ("new_parse", "new_chunk", "old_parse", "old_chunk")
    }
    counts = {"new_chunks": 0, "old_chunks": 0, "new_title_only": 0, "old_title_only": 0}
    cpu_started = time.process_time()
    for n, page in enumerate(pages, 1):
        elements, ms = _timed(lambda page=page: parse(page, "text/x-rst"))
        times["new_parse"].append(ms)
        chunks, ms = _timed(lambda elements=elements: chunker.chunk(elements))
        times["new_chunk"].append(ms)
        counts["new_chunks"] += len(chunks)
        counts["new_title_only"] += sum(_title_only(c.text) for c in chunks)

        elements, ms = _timed(lambda page=page: parse_via_html(page))
        times["old_parse"].append(ms)
        old_chunks, ms = _timed(lambda elements=elements: legacy.chunk(elements))
        times["old_chunk"].append(ms)
        counts["old_chunks"] += len(old_chunks)
        counts["old_title_only"] += sum(_title_only(text) for _, text in old_chunks)
        if n % 40 == 0:
            print(f"{n}/{len(pages)} pages", file=sys.stderr, flush=True)
    cpu_s = time.process_time() - cpu_started

    stats = {k: _stats(v) for k, v in times.items()}
    both = {
        side: [p + c for p, c in zip(times[f"{side}_parse"], times[f"{side}_chunk"], strict=True)]
        for side in ("new", "old")
    }
    result = {
        "benchmark": "parse",
        "docs": len(pages),
        "django": args.django,
        "corpus_sha256": hashlib.sha256("\x00".join(pages).encode()).hexdigest()[:16],
        "chunk_size": args.chunk_size,
        "ms_per_page": {
            "new": {"parse": stats["new_parse"], "chunk": stats["new_chunk"]},
            "old": {"parse": stats["old_parse"], "chunk": stats["old_chunk"]},
            "new_parse_plus_chunk": _stats(both["new"]),
            "old_parse_plus_chunk": _stats(both["old"]),
        },
        "old_over_new": {
            "parse_median": round(stats["old_parse"]["median"] / stats["new_parse"]["median"], 1),
            "parse_total": round(stats["old_parse"]["total_s"] / stats["new_parse"]["total_s"], 1),
            "parse_plus_chunk_total": round(sum(both["old"]) / sum(both["new"]), 1),
        },
        "target_parse_median_ms": TARGET_PARSE_MEDIAN_MS,
        "meets_target": stats["new_parse"]["median"] <= TARGET_PARSE_MEDIAN_MS,
        "chunks": counts,
        "process_cpu_seconds": round(cpu_s, 1),
        "machine": {
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
            "load_average_at_start": load_at_start,
            "load_average_at_end": loadavg(),
        },
    }
    for side in ("new", "old"):
        p, c = stats[f"{side}_parse"], stats[f"{side}_chunk"]
        print(
            f"{side}: parse median {p['median']} ms/page, p95 {p['p95']}; "
            f"chunk median {c['median']} ms/page, p95 {c['p95']}"
        )
    print(f"old/new parse median: {result['old_over_new']['parse_median']}x")
    write(result, args.out)


if __name__ == "__main__":
    main()
