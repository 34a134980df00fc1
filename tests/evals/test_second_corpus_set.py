"""The second corpus's question set (evals/datasets/sphinx-VERSION.v1.jsonl) against the pages.

Same standard as the Django dev set: every gold section is a chunk section of its page
(the service's chunker and settings), every gold passage lies in its sections, no question
is in the corpus verbatim. Plus what the named/paraphrased split needs: every question
labelled, the halves balanced, no two questions on one section, many pages.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import pytest

from evals.dataset import DATASET_VERSION, DATASETS, EvalItem, load
from evals.subjects import agreement, page_titles, split
from freshrag.settings import Settings
from ingest.chunker import Chunker
from ingest.parser import parse
from ingest.second_corpus import PREFIX, VERSION, doc_files, doc_id, sphinx_docs

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SET = DATASETS / f"sphinx-{VERSION}.v{DATASET_VERSION}.jsonl"


def _docs() -> Path:
    """The cached docs, downloaded on first use; a path that does not exist if offline."""
    try:
        return sphinx_docs(ROOT / "data" / "samples")
    except Exception:  # no PyPI: the tests below skip and say why
        return ROOT / "data" / "samples" / f"sphinx-{VERSION}" / "doc"


DOCS = _docs()
needs_docs = pytest.mark.skipif(
    not DOCS.is_dir(), reason=f"the Sphinx {VERSION} docs are not cached at {DOCS}"
)


def norm(text: str) -> str:
    return " ".join(text.split()).lower()


@functools.cache
def sections(doc: str) -> dict[str, str]:
    """context id → the text of its chunks, as the index holds them."""
    fields = Settings.model_fields
    chunker = Chunker(fields["chunk_size"].default, fields["chunk_overlap"].default)
    text = (DOCS / doc.removeprefix(PREFIX)).read_text("utf-8")
    out: dict[str, list[str]] = {}
    for c in chunker.chunk(parse(text, "text/x-rst")):
        out.setdefault(f"{doc}#{' '.join(c.section.split())}", []).append(c.text)
    return {k: norm(" ".join(v)) for k, v in out.items()}


def problems(item: EvalItem) -> list[str]:
    found: dict[str, str] = {}
    for doc in item.gold_doc_ids:
        found |= sections(doc)
    out = [f"{item.id}: no chunk has section {c!r}" for c in item.gold_contexts if c not in found]
    gold = " ".join(found.get(c, "") for c in item.gold_contexts)
    for p in item.gold_passages:  # line by line: list items and code are re-rendered in chunks
        if any(norm(line) not in gold for line in p.splitlines() if line.strip()):
            out.append(f"{item.id}: gold passage not in its gold sections: {p[:60]!r}")
    return out


def test_the_set_is_labelled_balanced_and_spread():
    items = load(SET, with_unanswerable=True)
    assert len(items) >= 60 and all(i.answerable for i in items)
    assert len({i.id for i in items}) == len({norm(i.question) for i in items}) == len(items)
    labels = Counter(i.phrasing for i in items)
    assert set(labels) == {"named", "paraphrased"}
    assert min(labels.values()) >= 0.45 * len(items)
    assert all(i.reference and i.gold_contexts and i.gold_passages for i in items)
    assert all(d.startswith(PREFIX) for i in items for d in i.gold_doc_ids)
    per_section = Counter(c for i in items for c in i.gold_contexts)
    assert [c for c, n in per_section.items() if n > 1] == [], "two questions on one section"
    per_page = Counter(d for i in items for d in i.gold_doc_ids)
    assert len(per_page) >= 35 and max(per_page.values()) <= 6
    assert not any("/changes/" in d for d in per_page), "no release notes"


@needs_docs
def test_gold_sections_exist_as_chunks_and_passages_lie_in_them():
    assert [p for i in load(SET) for p in problems(i)] == []


@needs_docs
def test_no_question_is_verbatim_in_the_corpus():
    corpus = norm(" ".join(f.read_text("utf-8") for f in doc_files(DOCS, release_notes=True)))
    assert [i.id for i in load(SET) if norm(i.question) in corpus] == []


@needs_docs
def test_the_subject_rule_mostly_agrees_with_the_writers_labels():
    items = load(SET)
    titles = page_titles({doc_id(p, DOCS): p.read_text("utf-8") for p in doc_files(DOCS)})
    agree, labelled = agreement(items, titles)
    assert labelled == len(items) and agree >= 0.9 * labelled
    named, paraphrased = split(items, titles)  # labelled: the split is the labels
    assert {i.phrasing for i in named} == {"named"}
    assert {i.phrasing for i in paraphrased} == {"paraphrased"}
