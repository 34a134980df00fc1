"""The eval sets: the dev set is honest (user-style questions that are not in the indexed
text, gold sections that exist as chunks, unanswerable questions scored as refusals), the
held-out FAQ rewrite removes the questions from the pages, and the doc-type metadata.

The checks against the real Django docs use the sample (downloaded from PyPI once, as
`freshrag up` does) and are skipped, saying so, only when it cannot be had.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from evals.dataset import (
    EvalItem,
    build_django_faq,
    build_heldout_faq,
    default_path,
    faq_path,
    heldout_faq_path,
    load,
    save,
    strip_question_headings,
    with_heldout_faq,
)
from evals.metrics import answerable, refusal_scores
from freshrag.settings import Settings
from ingest.chunker import Chunker
from ingest.parser import parse
from ingest.sample import django_docs, doc_files, doc_type, sample_metadata

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
VERSION = Settings.model_fields["sample_django_version"].default


def _sample_docs() -> Path:
    """The cached sample, downloaded on first use; a path that does not exist if offline."""
    try:
        return django_docs(VERSION, ROOT / "data" / "samples")
    except Exception:  # no PyPI: the tests below skip and say why
        return ROOT / "data" / "samples" / f"django-{VERSION}" / "docs"


DOCS = _sample_docs()
CHUNK_SIZE = Settings.model_fields["chunk_size"].default
CHUNK_OVERLAP = Settings.model_fields["chunk_overlap"].default
PREFIX = "django/"

needs_docs = pytest.mark.skipif(
    not DOCS.is_dir(),
    reason=f"the Django {VERSION} docs are not cached at {DOCS} "
    "(run `freshrag up` once, or python -c 'from ingest.sample import django_docs; ...')",
)


def norm(text: str) -> str:
    return " ".join(text.split()).lower()


# --- without the docs --------------------------------------------------------------------------


def test_an_unanswerable_question_has_no_gold_and_an_answerable_one_needs_some():
    EvalItem(id="u", question="Is there a GraphQL endpoint?", answerable=False)
    with pytest.raises(ValidationError, match="no gold"):
        EvalItem(id="u", question="q?", answerable=False, gold_doc_ids=["a"])
    with pytest.raises(ValidationError, match="gold_doc_ids or gold_contexts"):
        EvalItem(id="a", question="q?")


def test_load_leaves_unanswerable_out_unless_asked_and_save_round_trips(tmp_path):
    items = [
        EvalItem(id="a", question="How?", gold_doc_ids=["d"], gold_contexts=["d#s"]),
        EvalItem(id="u", question="Why not?", answerable=False),
    ]
    path = tmp_path / "set.jsonl"
    save(items, path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert "answerable" not in lines[0] and lines[1]["answerable"] is False
    assert [i.id for i in load(path)] == ["a"]
    assert load(path, with_unanswerable=True) == items
    assert answerable(items) == items[:1]


RST = """\
============
FAQ: General
============

Why does ``Django`` exist?
==========================

It grew out of a newsroom.

Notes
=====

Not a question.

Who uses it?
------------

Many sites.
"""


def test_question_headings_are_replaced_by_neutral_ones():
    stripped, replaced = strip_question_headings(RST)
    assert replaced == [("Entry 1", "Why does Django exist?"), ("Entry 2", "Who uses it?")]
    titles = [e.text for e in parse(stripped, "text/x-rst") if e.category == "Title"]
    assert titles == ["FAQ: General", "Entry 1", "Notes", "Entry 2"]
    assert "exist" not in stripped and "Who uses" not in stripped
    assert "It grew out of a newsroom." in stripped and "Many sites." in stripped
    assert "Entry 2\n-------\n" in stripped  # the heading keeps its level


def test_held_out_faq_renames_gold_and_adds_the_faq_questions(tmp_path):
    (tmp_path / "faq").mkdir()
    (tmp_path / "faq" / "general.txt").write_text(RST)
    heldout = build_heldout_faq(tmp_path)
    [(path, text)] = heldout.pages.values()
    assert path == tmp_path / "faq" / "general.txt" and "Entry 1" in text
    assert [(i.question, i.gold_contexts) for i in heldout.items] == [
        ("Why does Django exist?", ["django/faq/general.txt#Entry 1"]),
        ("Who uses it?", ["django/faq/general.txt#Entry 2"]),
    ]
    assert [i.question for i in heldout.items] == [i.question for i in build_django_faq(tmp_path)]
    mine = EvalItem(
        id="p",
        question="Where did Django come from?",
        gold_doc_ids=["django/faq/general.txt"],
        gold_contexts=["django/faq/general.txt#Why does Django exist?", "x#y"],
    )
    combined = with_heldout_faq([mine], heldout)
    assert combined[0].gold_contexts == ["django/faq/general.txt#Entry 1", "x#y"]
    assert [i.id for i in combined[1:]] == [i.id for i in heldout.items]


def test_refusal_scores_split_by_the_right_answer():
    items = [
        EvalItem(id="a1", question="q1", gold_doc_ids=["d"]),
        EvalItem(id="a2", question="q2", gold_doc_ids=["d"]),
        EvalItem(id="u1", question="q3", answerable=False),
        EvalItem(id="u2", question="q4", answerable=False),
        EvalItem(id="u3", question="q5", answerable=False),
    ]
    refused = {"a1": True, "a2": False, "u1": True, "u2": True, "u3": False}
    rows = [{"id": k, "refused": v} for k, v in refused.items()]
    s = refusal_scores(items, rows)
    assert s == {
        "unanswerable_questions": 3,
        "unanswerable_refusal_rate": pytest.approx(2 / 3),
        "false_refusal_rate": 0.5,
    }
    assert [r["answerable"] for r in rows] == [True, True, False, False, False]
    none = refusal_scores(items[:2], [{"id": "a1", "refused": False}])
    assert none["unanswerable_refusal_rate"] is None and none["false_refusal_rate"] == 0.0


def test_doc_type_from_the_top_folder(tmp_path):
    assert doc_type("releases/5.2.txt") == "release-notes"
    assert doc_type("ref/models/fields.txt") == "reference"
    assert doc_type("topics/db/queries.txt") == "topic"
    assert [doc_type(f"{d}/x.txt") for d in ("howto", "intro", "faq")] == ["howto", "intro", "faq"]
    assert doc_type("index.txt") == doc_type("glossary.txt") == "guide"
    assert sample_metadata(tmp_path / "faq" / "a.txt", tmp_path, "5.2.8") == {
        "corpus": "django-docs",
        "release": "5.2.8",
        "doc_type": "faq",
    }


# --- against the cached Django docs --------------------------------------------------------------


@functools.cache
def _chunks(doc_id: str, text: str | None = None) -> list:
    body = text if text is not None else (DOCS / doc_id.removeprefix(PREFIX)).read_text("utf-8")
    return Chunker(CHUNK_SIZE, CHUNK_OVERLAP).chunk(parse(body, "text/x-rst"))


def _sections(doc_id: str, text: str | None = None) -> dict[str, str]:
    """section → the text of its chunks (headings included, as the index holds them)."""
    out: dict[str, list[str]] = {}
    for c in _chunks(doc_id, text):
        out.setdefault(f"{doc_id}#{' '.join(c.section.split())}", []).append(c.text)
    return {k: norm(" ".join(v)) for k, v in out.items()}


def _gold_ok(item: EvalItem, pages: dict[str, str] | None = None) -> list[str]:
    """What is wrong with an item's gold: missing sections, passages outside them, verbatim."""
    pages = pages or {}
    problems = []
    sections: dict[str, str] = {}
    for doc_id in item.gold_doc_ids:
        sections |= _sections(doc_id, pages.get(doc_id))
    for cid in item.gold_contexts:
        if cid not in sections:
            problems.append(f"{item.id}: no chunk has section {cid!r}")
    gold_text = " ".join(sections.get(c, "") for c in item.gold_contexts)
    for p in item.gold_passages:  # line by line: list items and code are re-rendered in chunks
        if any(norm(line) not in gold_text for line in p.splitlines() if line.strip()):
            problems.append(f"{item.id}: gold passage not in its gold sections: {p[:60]!r}")
    page_text = " ".join(sections.values())
    if norm(item.question) in page_text:
        problems.append(f"{item.id}: the question is verbatim in its gold page")
    return problems


@needs_docs
def test_dev_set_size_spread_and_refusal_part():
    items = load(default_path(VERSION), with_unanswerable=True)
    answerable_items = [i for i in items if i.answerable]
    assert len(answerable_items) >= 60 and len(items) - len(answerable_items) >= 20
    assert len({i.id for i in items}) == len(items)
    assert len({norm(i.question) for i in items}) == len(items)
    folders = Counter(d.removeprefix(PREFIX).split("/")[0] for i in items for d in i.gold_doc_ids)
    assert {"topics", "ref", "howto", "intro", "faq"} <= set(folders) and "releases" not in folders
    assert folders["faq"] < len(answerable_items) / 4, "not only the FAQ"
    assert all(i.reference for i in items)
    assert all(i.gold_contexts and i.gold_passages for i in answerable_items)


@needs_docs
@pytest.mark.slow  # parses and chunks every page the dev set cites
def test_dev_set_gold_sections_exist_as_chunks_and_questions_are_not_in_the_pages():
    problems = [p for i in load(default_path(VERSION)) for p in _gold_ok(i)]
    assert problems == []


@needs_docs
def test_no_dev_question_is_verbatim_anywhere_in_the_corpus():
    corpus = norm(" ".join(f.read_text("utf-8") for f in doc_files(DOCS)))
    items = load(default_path(VERSION), with_unanswerable=True)
    assert [i.id for i in items if norm(i.question) in corpus] == []


@needs_docs
def test_held_out_faq_set_matches_the_rewritten_pages():
    heldout = build_heldout_faq(DOCS)
    stored = load(heldout_faq_path(VERSION))
    assert stored == heldout.items and len(stored) >= 40
    pages = {d: text for d, (_, text) in heldout.pages.items()}
    assert [p for i in stored for p in _gold_ok(i, pages)] == []
    # The dev set still scores on the rewritten pages: its FAQ gold is renamed, not lost.
    dev = with_heldout_faq(load(default_path(VERSION)), heldout)
    assert [p for i in dev for p in _gold_ok(i, pages)] == []


@needs_docs
def test_faq_regression_set_is_unchanged_and_still_what_the_builder_asks():
    old = load(faq_path(VERSION))
    built = build_django_faq(DOCS)
    assert [(i.question, i.gold_contexts) for i in old] == [
        (i.question, i.gold_contexts) for i in built
    ]
