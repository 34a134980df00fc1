import pytest

from ingest.events import DocumentEvent
from ingest.parser import UnsupportedDocument, install_offline_nlp, parse
from ingest.sources import SourcePolicy, load_body
from tests.documents import make_docx, make_pdf

pytestmark = pytest.mark.unit

RST = """\
=====================
How to use the widget
=====================

The widget turns requests into responses. See :doc:`the reference </ref/widget>`.

Installing
==========

.. versionadded:: 5.0

    The ``--fast`` flag.

Install it with :command:`pip install widget`.
"""


def texts(elements):
    return "\n".join(e.text for e in elements)


def test_offline_spacy_hook_is_in_place():
    # unstructured's private hook: if a new unstructured renames it, this test says so.
    from unstructured.nlp import tokenize

    install_offline_nlp()
    assert tokenize._get_nlp()("One sentence. Another one.").has_annotation("SENT_START")


def test_rst_keeps_text_and_drops_underlines():
    els = parse(RST, "text/x-rst")
    body = texts(els)
    assert "=====" not in body
    assert "the reference" in body and "pip install widget" in body and "--fast" in body
    assert els[0].category == "Title" and els[0].text == "How to use the widget"


def test_markdown_html_and_plain_text():
    md = parse(
        "# Title\n\nA paragraph about caching.\n\n## Sub\n\nMore text here.", "text/markdown"
    )
    assert [e.category for e in md][:2] == ["Title", "NarrativeText"]
    html = parse(
        "<html><body><h1>Hello</h1><p>Caching makes pages fast.</p></body></html>", "text/html"
    )
    assert "Caching makes pages fast." in texts(html)
    txt = parse("Plain text about queues and retries.", "text/plain")
    assert "queues and retries" in texts(txt)


def test_pdf_fast_strategy_and_docx():
    pdf = parse(
        make_pdf(["Quarterly report on vector search.", "Latency went down."]), "application/pdf"
    )
    assert "Quarterly report on vector search." in texts(pdf)
    docx = parse(
        make_docx("Runbook", ["Restart the worker with SIGTERM."]),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    )
    assert "Restart the worker with SIGTERM." in texts(docx)


def test_unsupported_and_broken_inputs_raise_a_clear_error(tmp_path):
    with pytest.raises(UnsupportedDocument, match="unsupported mime type 'image/png'"):
        parse(b"\x89PNG", "image/png")
    with pytest.raises(UnsupportedDocument, match="PDF"):
        parse(b"%PDF-1.4 garbage", "application/pdf")
    allowed = SourcePolicy([tmp_path])

    def body(source: str, policy: SourcePolicy = allowed) -> str | bytes:
        event = DocumentEvent(op="upsert", doc_id="d", version=1, source=source)
        return load_body(event, policy, 1000)

    with pytest.raises(UnsupportedDocument, match="only file://"):
        body("https://example.com/a.md")
    with pytest.raises(UnsupportedDocument, match="cannot read"):
        body((tmp_path / "missing.md").as_uri())
    big = tmp_path / "big.txt"
    big.write_text("x" * 2000)
    with pytest.raises(UnsupportedDocument, match="over the 1000 byte limit"):
        body(big.as_uri())


def test_the_parser_module_keeps_its_public_names():
    from ingest.parser import (  # noqa: F401
        BINARY_MIMES,
        PARSER_VERSION,
        SUPPORTED_MIMES,
        TEXT_MIMES,
        Element,
        normalize_mime,
    )

    assert isinstance(PARSER_VERSION, str) and PARSER_VERSION
    assert Element("Title", "x") == Element("Title", "x", 0), "level is optional"
    assert normalize_mime("text/x-markdown; charset=utf-8") == "text/markdown"
    assert SUPPORTED_MIMES == TEXT_MIMES | BINARY_MIMES
