"""Issue 29: does a corpus-adapted MiniLM (`freshrag tune`) retrieve better? One run, base
against tuned, on every set:

- the Django dev set, and the held-out FAQ (the FAQ pages indexed without their question
  headings from the start, so no tune ever sees a FAQ question: both sets are scored on
  that one index);
- a second corpus no tuning choice was made on (`--second`: Sphinx's manual,
  ingest/second_corpus.py), with questions written before any tuning
  (evals/datasets/sphinx-*.jsonl), tuned on its own index.

Each set is split into questions that name their subject and questions that paraphrase
it (evals/subjects.py), reported apart. Page MRR@10 / nDCG@10 (pages folded from the top
30 hits) and section MRR@10 / nDCG@10 (a hit holds a gold passage's opening words), for
hybrid and dense (sparse does not depend on the model). The tuned index is built as
`freshrag reindex --model` builds it (freshrag/generations/copier.py: the stored chunks,
encoded again), and timed.

    .venv/bin/python -m bench.tune [--docs N] [--steps N] [--keep F] [--mix cloze=.6,...]
                                   [--second] [--out FILE]

Writes bench/results/tune.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bench.harness import RESULTS, SAMPLES, child_env, django_events, scratch_dir, write
from bench.quality import CANDIDATES, first_hit, gold_and_others, gold_docs, probe, words
from evals import subjects
from evals.dataset import (
    DATASET_VERSION,
    DATASETS,
    EvalItem,
    build_heldout_faq,
    default_path,
    load,
)
from evals.metrics import ir_scores
from freshrag.generations.copier import copy_index
from freshrag.runtime import Core
from freshrag.settings import Settings
from freshrag.tuning.corpus import read_corpus
from freshrag.tuning.pairs import DEFAULT_MIX, count_kinds, mine_pairs
from freshrag.tuning.train import TuneSpec, blend
from ingest.chunker import Chunker
from ingest.events import DocumentEvent
from ingest.publisher import file_event
from ingest.sample import django_docs, doc_files
from retrieval.search import Principal

MODES = ("hybrid", "dense")
WHO = Principal("bench", "default", ("public",))


def _ndcg(flags: list[bool], k: int = 10) -> float:
    """Binary-relevance nDCG@k with one relevant item (the first hit counts)."""
    rank = first_hit(flags, k)
    return 1 / math.log2(rank + 1) if rank else 0.0


def score(items: list[EvalItem], ranked: dict[str, list[tuple[str, str]]]) -> dict[str, float]:
    gold = {i.id: gold_docs(i) for i in items}
    pages = {q: list(dict.fromkeys(d for d, _ in hits))[:10] for q, hits in ranked.items()}
    ir = ir_scores(gold, pages)
    section_rr, section_ndcg = [], []
    for i in items:
        probes = [p for p in map(probe, i.gold_passages) if p]
        if not probes:
            continue
        flags = [any(p in words(text) for p in probes) for _, text in ranked[i.id]]
        rank = first_hit(flags)
        section_rr.append(1 / rank if rank else 0.0)
        section_ndcg.append(_ndcg(flags))
    n = max(1, len(items))
    m = max(1, len(section_rr))
    return {
        "page_mrr@10": round(sum(s["mrr@10"] for s in ir.values()) / n, 4),
        "page_ndcg@10": round(sum(s["ndcg@10"] for s in ir.values()) / n, 4),
        "section_mrr@10": round(sum(section_rr) / m, 4),
        "section_ndcg@10": round(sum(section_ndcg) / m, 4),
        "questions": len(items),
    }


def split(items: list[EvalItem], pages: dict[str, str]) -> dict[str, list[EvalItem]]:
    """{"all", "named", "paraphrased"} → items (evals/subjects.py decides); `pages`:
    doc_id → the page's text, for its title."""
    named, paraphrased = subjects.split(items, subjects.page_titles(pages))
    return {"all": items, "named": named, "paraphrased": paraphrased}


def evaluate(core: Core, sets: dict[str, dict[str, list[EvalItem]]]) -> dict:
    retriever = core.retriever()
    out: dict = {}
    for name, parts in sets.items():
        everyone = parts["all"]
        for mode in MODES:
            ranked = {
                i.id: [
                    (h.payload["doc_id"], h.payload["text"])
                    for h in retriever.retrieve(WHO, i.question, CANDIDATES, mode)
                ]
                for i in tqdm(everyone, desc=f"{name} {mode}", disable=not sys.stderr.isatty())
            }
            for part, items in parts.items():
                out[f"{name}/{part}/{mode}"] = score(items, {i.id: ranked[i.id] for i in items})
    return out


def index(settings: Settings, events: list[DocumentEvent]) -> tuple[Core, float]:
    core = Core.open(settings)
    indexer = core.indexer()
    started = time.perf_counter()
    for i in tqdm(range(0, len(events), 16), desc="indexing", disable=not sys.stderr.isatty()):
        indexer.apply(events[i : i + 16])
    indexer.processor.close()
    return core, time.perf_counter() - started


def reindexed(base: Core, model: str) -> tuple[Core, float]:
    """A second index for `model`, copied from the stored chunks as `freshrag reindex`
    copies them."""
    settings = base.settings.model_copy(
        update={"model": model, "data_dir": scratch_dir("freshrag-tune-tuned-")}
    )
    core = Core.open(settings)
    s = core.settings
    chunker = Chunker(s.chunk_size, s.chunk_overlap, headers=s.chunk_headers, model=s.model)
    indexer = core.indexer()
    started = time.perf_counter()
    indexer.warm_up()
    copy_index(base.index, core.index, chunker, indexer.processor.encode, core.sparse)
    indexer.processor.close()
    return core, time.perf_counter() - started


def tune(core: Core, args: argparse.Namespace, label: str) -> tuple[str, dict]:
    """Mine pairs from `core`'s index and train in the niced child, as `freshrag tune` does."""
    s = core.settings
    corpus = read_corpus(core.index, "default")
    chunker = Chunker(s.chunk_size, s.chunk_overlap, headers=s.chunk_headers, model=s.model)
    started = time.perf_counter()
    pairs = mine_pairs(
        corpus.documents,
        chunker.header_of,
        limit=args.steps * args.batch,
        mix=args.mix,
        seed=args.seed,
    )
    mined = time.perf_counter() - started
    work = scratch_dir(f"freshrag-tune-{label}-")
    (work / "pairs.jsonl").write_text(
        "".join(
            json.dumps({"anchor": p.anchor, "positive": p.positive, "kind": p.kind}) + "\n"
            for p in pairs
        )
    )
    spec = TuneSpec(
        base_model=s.model,
        pairs_file=str(work / "pairs.jsonl"),
        out_dir=str(work / "model"),
        progress_file=str(work / "progress.json"),
        steps=args.steps,
        max_seconds=args.max_seconds,
        batch_size=args.batch,
        learning_rate=args.lr,
        keep=1.0,  # blended afterwards, once per --keep
        seed=args.seed,
        card={"scope": corpus.scope, "documents": len(corpus.documents), "chunks": corpus.chunks},
    )
    spec.dump(work / "spec.json")
    print(f"{label}: training on {len(pairs)} pairs {count_kinds(pairs)}", flush=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "freshrag.tuning.train", str(work / "spec.json")],
        env=child_env(Path.cwd()),
        check=True,
    )
    trained = time.perf_counter() - started
    facts = json.loads((work / "model" / "freshrag-tune.json").read_text())
    facts.update({"mine_seconds": round(mined, 2), "child_seconds": round(trained, 1)})
    return spec.out_dir, facts


def django_sets(args: argparse.Namespace) -> tuple[list[DocumentEvent], dict]:
    """Every page (or the gold ones and `--docs` others), the FAQ in its held-out form."""
    version = Settings().sample_django_version
    docs = django_docs(version, SAMPLES)
    dev = [i for i in load(default_path(version)) if i.answerable]
    faq = build_heldout_faq(docs)
    every = doc_files(docs)
    files = gold_and_others(every, docs, dev, args.docs)
    events = [e for e in django_events(docs, files) if e.doc_id not in faq.pages] + [
        file_event(path, doc_id, version=1, mime="text/x-rst", data=text.encode())
        for doc_id, (path, text) in faq.pages.items()
    ]
    pages = {f"django/{p.relative_to(docs).as_posix()}": p.read_text() for p in every}
    return events, {"dev": split(dev, pages), "heldout_faq": split(faq.items, pages)}


def sphinx_sets() -> tuple[list[DocumentEvent], dict]:
    """The second corpus (ingest/second_corpus.py) and its questions, written before any
    tuning; the writer's named/paraphrased labels decide its split."""
    from ingest import second_corpus

    docs = second_corpus.sphinx_docs(SAMPLES)
    files = second_corpus.doc_files(docs)
    dataset = DATASETS / f"sphinx-{second_corpus.VERSION}.v{DATASET_VERSION}.jsonl"
    items = [i for i in load(dataset) if i.answerable]
    pages = {second_corpus.doc_id(p, docs): p.read_text() for p in files}
    return second_corpus.corpus_events(docs, files), {"sphinx": split(items, pages)}


def run_corpus(name: str, events, sets, args: argparse.Namespace) -> dict:  # noqa: ANN001
    settings = Settings(data_dir=scratch_dir(f"freshrag-tune-{name}-"))
    base, index_seconds = index(settings, events)
    out: dict = {
        "documents": len(events),
        "chunks": base.index.count_chunks([]),
        "index_seconds": round(index_seconds, 1),
        "base": evaluate(base, sets),
    }
    model, facts = tune(base, args, name)  # the tuned weights alone (keep 1)
    out["training"] = facts
    out["variants"] = {}
    for keep in args.keep:
        folder = model
        if keep < 1.0:
            folder = f"{model}-keep{keep:g}"
            blend(model, base.settings.model, keep, folder)
        tuned, reindex_seconds = reindexed(base, folder)
        scores = evaluate(tuned, sets)
        out["variants"][f"keep {keep:g}"] = {
            "keep": keep,
            "reindex_seconds": round(reindex_seconds, 1),
            "scores": scores,
            "delta": {
                k: {m: round(scores[k][m] - v, 4) for m, v in row.items() if m != "questions"}
                for k, row in out["base"].items()
            },
        }
        tuned.index.close()
    base.index.close()
    return out


def parse_mix(value: str | None) -> dict[str, float]:
    if not value:
        return dict(DEFAULT_MIX)
    return {k: float(v) for k, v in (part.split("=") for part in value.split(","))}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=None, help="pages besides the gold ones (all)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--max-seconds", type=float, default=1800.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument(
        "--keep",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[0.5, 1.0],
        help="weights of the tuned model blended with the base, each scored (one training)",
    )
    ap.add_argument(
        "--mix", type=parse_mix, default=None, help="e.g. cloze=.6,heading=.25,neighbour=.15"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--second", action="store_true", help="also the second corpus")
    ap.add_argument("--out", type=Path, default=RESULTS / "tune.json")
    args = ap.parse_args()
    args.mix = args.mix or dict(DEFAULT_MIX)
    result: dict = {
        "benchmark": "tune",
        "recipe": {
            "steps": args.steps,
            "batch": args.batch,
            "lr": args.lr,
            "keep": args.keep,
            "mix": args.mix,
            "seed": args.seed,
            "max_seconds": args.max_seconds,
        },
        "corpora": {},
    }
    events, sets = django_sets(args)
    result["corpora"]["django"] = run_corpus("django", events, sets, args)
    if args.second:
        events, sets = sphinx_sets()
        result["corpora"]["sphinx"] = run_corpus("sphinx", events, sets, args)
    print_table(result)
    write(result, args.out)


def print_table(result: dict) -> None:
    for corpus, body in result["corpora"].items():
        t = body["training"]
        print(
            f"\n{corpus}: {body['documents']} documents, {body['chunks']} chunks; "
            f"{t['pairs']} pairs, {t['steps']} steps in {t['train_seconds']} s"
        )
        for name, v in body["variants"].items():
            print(f"  {name} (reindex {v['reindex_seconds']} s)")
            print(
                f"  {'set/part/mode':34}{'page MRR base':>14}{'tuned':>8}{'Δ':>8}{'sect MRR Δ':>12}"
            )
            for key, base in body["base"].items():
                tuned = v["scores"][key]
                print(
                    f"  {key + ' (' + str(base['questions']) + ')':34}"
                    f"{base['page_mrr@10']:>14.3f}{tuned['page_mrr@10']:>8.3f}"
                    f"{v['delta'][key]['page_mrr@10']:>+8.3f}"
                    f"{v['delta'][key]['section_mrr@10']:>+12.3f}"
                )


if __name__ == "__main__":
    main()
