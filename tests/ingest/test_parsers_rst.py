"""reST straight from the docutils doctree: what reaches chunks is what a reader sees."""

import subprocess
import sys

import pytest

from ingest.chunker import Chunker
from ingest.parser import UnsupportedDocument, parse

pytestmark = pytest.mark.unit

SPHINX_PAGE = """\
.. _topics-widgets:

=======
Widgets
=======

.. index:: widgets; rendering, pair: widget; template

.. only:: html

    Widgets render form fields as HTML.

.. only:: latex

    This paragraph is only in the PDF.

Using widgets
=============

Pick a widget for every field and let the form render it for you.
"""

DOCTEST_PAGE = """\
Doctests
========

The examples below run as tests.

.. doctest::

    >>> from shop import Basket
    # Build an empty basket.
    >>> basket = Basket()

    # Add two apples.
    >>> basket.add("apple", 2)

""" + "\n".join(
    f"Paragraph {i} explains how the basket keeps item {i} in order.\n" for i in range(8)
)


def rst(text: str):
    return parse(text, "text/x-rst")


def texts(elements) -> str:
    return "\n".join(e.text for e in elements)


def test_index_entries_and_only_arguments_produce_no_text():
    els = rst(SPHINX_PAGE)
    body = texts(els)
    assert "rendering" not in body and "pair:" not in body, "index entries leaked"
    assert not any(e.text.strip() in {"html", "latex"} for e in els), "only:: argument leaked"
    assert "Widgets render form fields as HTML." in body, "only:: html content is kept"
    assert "only in the PDF" not in body, "an HTML build does not show only:: latex"
    for chunk in Chunker(128).chunk(els):
        first_body_line = next(x for x in chunk.text.splitlines() if x and not x.startswith("#"))
        assert not first_body_line.startswith(("html", "widgets;")), chunk.text


def test_sphinx_markup_that_renders_nothing_produces_no_text():
    page = """\
Title
=====

.. toctree::
   :maxdepth: 2

   intro
   advanced

.. highlight:: console

.. currentmodule:: django.forms

.. setting:: FORM_RENDERER

.. |unused| replace:: a substitution nobody uses

.. _a-target:

.. A comment: nobody reads this.

The only sentence.
"""
    assert [(e.category, e.text) for e in rst(page)] == [
        ("Title", "Title"),
        ("NarrativeText", "The only sentence."),
    ]


def test_doctest_comment_stays_inside_its_code_chunk():
    chunks = Chunker(chunk_size=64).chunk(rst(DOCTEST_PAGE))
    assert {c.section for c in chunks} == {"Doctests"}, "a # line in code became a heading"
    code = next(c.text for c in chunks if "# Add two apples." in c.text)
    assert code.index("```") < code.index("# Add two apples.") < code.rindex("```")
    assert not any(line.startswith("## Add") for c in chunks for line in c.text.splitlines())


def test_code_directives_are_code_not_rest():
    page = """\
.. code-block:: python

    * not a list
    # not a heading

    Not a title
    ===========
"""
    assert [(e.category, e.text) for e in rst(page)] == [
        ("CodeSnippet", "* not a list\n# not a heading\n\nNot a title\n===========")
    ]


def test_roles_become_the_text_a_reader_sees():
    els = rst(
        "Subclass :class:`~django.db.models.Model`, call :meth:`save` or "
        ":meth:`Model.delete() <django.db.models.Model.delete>`, set :setting:`DEBUG`, "
        "read :doc:`the reference </ref/widget>`, see :ticket:`1234` and :unknown:`text`."
    )
    assert texts(els) == (
        "Subclass Model, call save() or Model.delete(), set DEBUG, "
        "read the reference, see #1234 and text."
    )


def test_object_descriptions_keep_signature_and_text():
    els = rst(
        ".. class:: Widget(attrs=None)\n\n"
        "    Renders one field.\n\n"
        "    .. method:: render(name, value)\n\n"
        "        Returns HTML.\n"
    )
    assert [e.text for e in els] == [
        "class Widget(attrs=None)",
        "Renders one field.",
        "render(name, value)",
        "Returns HTML.",
    ]


def test_version_notes_admonitions_tables_and_definitions_read_as_text():
    page = """\
.. versionadded:: 5.0

    The ``--fast`` flag.

.. note:: Back up first.

+------+-------+
| Name | Kind  |
+======+=======+
| one  | text  |
+------+-------+

timeout
    Seconds to wait.
"""
    assert [(e.category, e.text) for e in rst(page)] == [
        ("NarrativeText", "Added in version 5.0: The --fast flag."),
        ("NarrativeText", "Note: Back up first."),
        ("Table", "Name | Kind\none | text"),
        ("NarrativeText", "timeout: Seconds to wait."),
    ]


def test_titles_carry_their_level_and_lists_their_depth():
    els = rst("Top\n===\n\nSub\n---\n\n- outer\n\n  - inner\n")
    assert [(e.category, e.text, e.level) for e in els] == [
        ("Title", "Top", 1),
        ("Title", "Sub", 2),
        ("ListItem", "outer", 0),
        ("ListItem", "inner", 1),
    ]


MALFORMED = [
    "*unclosed **strong ``literal `ref`_ :role:`x\n\n|undefined| [#]_ [cite]_ `anon`__\n",
    "+--+\n| bad |\n+---\n\n===\nT\n=\n\nShort\n==\n",
    ".. include:: /etc/passwd\n\n.. raw:: html\n\n   <b>raw</b>\n\n.. image::\n\n.. code-block::\n",
    ".. note::\n   :bogus:\n\n   text\n\n.. list-table::\n   :header-rows: 5\n\n   * - a\n",
    "\x00\tTab\n\n.. |x| unknown:: y\n",
]


@pytest.mark.parametrize("page", MALFORMED)
def test_malformed_rst_is_silent_and_never_includes_files(page, capfd):
    els = rst(page)
    out, err = capfd.readouterr()
    assert (out, err) == ("", ""), "docutils must not print"
    assert "root:" not in texts(els) and "<b>" not in texts(els)


def test_a_document_the_parser_cannot_handle_is_an_unsupported_document(capfd):
    deep = "".join("    " * i + f"para {i}\n\n" for i in range(400))
    with pytest.raises(UnsupportedDocument, match="could not parse text/x-rst"):
        rst(deep)
    assert capfd.readouterr().err == ""


def test_rst_and_markdown_need_neither_unstructured_nor_spacy():
    code = (
        "import sys\n"
        "from ingest.parser import parse\n"
        "parse('Title\\n=====\\n\\nText.', 'text/x-rst')\n"
        "parse('# Title\\n\\nText.', 'text/markdown')\n"
        "print(sorted(m for m in ('unstructured', 'spacy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
