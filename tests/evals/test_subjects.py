"""`evals.subjects`: whether a question names its subject, and the split of a set by it."""

from __future__ import annotations

import pytest

from evals.dataset import EvalItem
from evals.subjects import (
    agreement,
    identifiers,
    item_titles,
    names_subject,
    page_title,
    page_titles,
    split,
    stem,
)
from ingest.parser import parse

pytestmark = pytest.mark.unit

FIELDS = ["Model field reference", "null"]


def item(question: str, contexts: list[str], phrasing: str | None = None) -> EvalItem:
    docs = list(dict.fromkeys(c.split("#")[0] for c in contexts))
    return EvalItem(
        id=question[:20], question=question, gold_doc_ids=docs, gold_contexts=contexts,
        phrasing=phrasing,
    )  # fmt: skip


# --- the rule ---------------------------------------------------------------------------------


def test_a_shared_content_word_names_the_subject_and_stopwords_do_not():
    assert names_subject("Why is my field NULL in the database?", FIELDS)
    assert not names_subject("How do I make it optional?", FIELDS)
    # "how", "do", "I", "use", "a", "the" are in every question and name nothing.
    assert not names_subject("How do I use it?", ["Using a theme"])


def test_light_stemming_joins_inflections_but_not_unrelated_words():
    assert names_subject("Can section numbers be shown?", ["Options for figure numbering"])
    assert names_subject("Which references break?", ["Cross-referencing anything"])
    assert names_subject("How do I include a file?", ["Including content based on tags"])
    assert stem("templates") == stem("templating") == stem("template")
    assert stem("strings") == stem("string") and stem("need") == "need"  # stems keep 3 letters
    assert not names_subject("How do I style the sidebar?", ["Builders"])


def test_identifiers_match_whole_after_normalising_calls_backticks_and_dotted_paths():
    assert identifiers("Use `select_related()` or models.ForeignKey, or QuerySet.get(pk=1)") >= {
        "select_related",
        "models.foreignkey",
        "foreignkey",
        "queryset.get",
        "get",
    }
    # "get" alone is a stopword, but as a call it is a name: the identifier rule finds it.
    assert names_subject("What does get() raise when nothing matches?", ["QuerySet API", "get()"])
    assert not names_subject("How do I get one row?", ["QuerySet API", "get()"])
    # A dotted path names what its last part names.
    assert names_subject("Is django.db.models.ForeignKey lazy?", ["ForeignKey"])
    assert "latex" in identifiers("LaTeX output")  # CamelCase: one name, not two words
    assert not identifiers("Version 5.2 of the docs, e.g. these.")  # not names


def test_snake_case_parts_are_words_but_camel_case_stays_one_token():
    # html_theme_options names the theme machinery; the heading says "theme".
    assert names_subject("What goes in html_theme_options?", ["HTML theming", "Using a theme"])
    assert not names_subject("What must SphinxRole.run() return?", ["The role class"])


def test_the_project_name_and_neutral_held_out_headings_name_nothing():
    assert not names_subject("Why does Django exist?", ["FAQ: General", "Entry 3"])
    assert not names_subject("Which Sphinx builds are there?", ["Sphinx FAQ"])
    assert names_subject("Who maintains the admin?", ["FAQ: The admin", "Entry 1"])
    assert names_subject("Why does Django exist?", ["Django FAQ"], ignore=())


def test_nothing_to_match_against_is_paraphrased():
    assert not names_subject("Anything at all?", [])
    assert not names_subject("Anything at all?", ["", "Entry 12"])


# --- titles and the split -----------------------------------------------------------------------

RST = """\
:orphan:

=======
Theming
=======

Intro.

Using a theme
=============

Set html_theme.
"""


def test_page_title_is_the_first_heading_as_parsed():
    assert page_title(parse(RST, "text/x-rst")) == "Theming"
    assert page_title(parse("no heading here", "text/x-rst")) == ""
    assert page_titles({"p/a.rst": RST}) == {"p/a.rst": "Theming"}


def test_item_titles_are_the_gold_pages_titles_and_the_gold_headings():
    i = item("q?", ["p/a.rst#Using a theme", "p/b.rst#null"])
    assert item_titles(i, {"p/a.rst": "Theming"}) == ["Theming", "", "Using a theme", "null"]
    only_docs = EvalItem(id="d", question="q?", gold_doc_ids=["p/a.rst"])
    assert item_titles(only_docs, {"p/a.rst": "Theming"}) == ["Theming"]


def test_split_uses_the_label_when_there_is_one_and_the_rule_otherwise():
    titles = {"p/a.rst": "Theming"}
    items = [
        item("How do I pick a theme?", ["p/a.rst#Using a theme"]),  # rule: named
        item("How do I change the colours?", ["p/a.rst#Using a theme"]),  # rule: paraphrased
        item("How do I change the colours?", ["p/a.rst#Using a theme"], "named"),  # label wins
        item("How do I pick a theme?", ["p/a.rst#Using a theme"], "paraphrased"),
    ]
    named, paraphrased = split(items, titles)
    assert [items.index(i) for i in named] == [0, 2]
    assert [items.index(i) for i in paraphrased] == [1, 3]
    assert agreement(items, titles) == (0, 2)  # both labels contradict the rule
    assert agreement(items[:2], titles) == (0, 0)  # nothing labelled, nothing to agree with


def test_unlabelled_items_keep_loading_and_saving_without_a_phrasing(tmp_path):
    from evals.dataset import load, save

    path = tmp_path / "set.jsonl"
    save([item("q?", ["d#s"]), item("r?", ["d#s"], "paraphrased")], path)
    lines = path.read_text().splitlines()
    assert "phrasing" not in lines[0] and '"phrasing":"paraphrased"' in lines[1]
    assert [i.phrasing for i in load(path)] == [None, "paraphrased"]
    with pytest.raises(ValueError, match="phrasing"):
        EvalItem(id="x", question="q?", gold_doc_ids=["d"], phrasing="vague")
