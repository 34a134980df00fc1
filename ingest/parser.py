"""Documents → text elements: the MIME type picks the parser.

reST and Markdown are read straight into elements (docutils doctree, markdown-it
tokens): no HTML round trip, no NLP. HTML, plain text, PDF and DOCX go through
unstructured. Every failure on one document is an `UnsupportedDocument` (→ the DLQ),
never an exception that stops the worker.
"""

from __future__ import annotations

from ingest.parsers.elements import Element, UnsupportedDocument
from ingest.parsers.unstructured import install_offline_nlp

__all__ = [
    "BINARY_MIMES",
    "PARSER_VERSION",
    "SUPPORTED_MIMES",
    "TEXT_MIMES",
    "Element",
    "UnsupportedDocument",
    "install_offline_nlp",
    "normalize_mime",
    "parse",
]

# Part of every chunk's identity (see ingest.chunker): bump it whenever what a document
# turns into changes (any parser's elements, or how the chunker cuts and renders them),
# so a re-parsed document gets all-new chunks, never a mix of old and new ones.
PARSER_VERSION = "2"

TEXT_MIMES = {"text/plain", "text/markdown", "text/x-rst", "text/html"}
BINARY_MIMES = {
    "application/pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
SUPPORTED_MIMES = TEXT_MIMES | BINARY_MIMES
_MIME_ALIASES = {
    "text/x-markdown": "text/markdown",
    "text/rst": "text/x-rst",
    "text/prs.fallenstein.rst": "text/x-rst",
    "application/xhtml+xml": "text/html",
}


def normalize_mime(mime: str) -> str:
    base = mime.split(";")[0].strip().lower()
    return _MIME_ALIASES.get(base, base)


def _as_text(body: str | bytes) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedDocument("text document is not valid UTF-8") from exc


def _parse(body: str | bytes, mime: str) -> list[Element]:
    if mime == "text/x-rst":
        from ingest.parsers.rst import parse_rst

        return parse_rst(_as_text(body))
    if mime == "text/markdown":
        from ingest.parsers.markdown import parse_markdown

        return parse_markdown(_as_text(body))
    from ingest.parsers import unstructured

    if mime in TEXT_MIMES:
        return unstructured.partition_text(_as_text(body), mime)
    return unstructured.partition_binary(body.encode() if isinstance(body, str) else body, mime)


def parse(body: str | bytes, mime: str) -> list[Element]:
    mime = normalize_mime(mime)
    if mime not in SUPPORTED_MIMES:
        raise UnsupportedDocument(
            f"unsupported mime type {mime!r}; supported: {', '.join(sorted(SUPPORTED_MIMES))}"
        )
    try:
        elements = _parse(body, mime)
    except UnsupportedDocument:
        raise
    except Exception as exc:  # a parser failing on one document must not stop the worker
        raise UnsupportedDocument(
            f"could not parse {mime} document: {type(exc).__name__}: {exc}"
        ) from exc
    if not elements and mime == "application/pdf":
        raise UnsupportedDocument(
            "no text found in the PDF (scanned? the fast strategy does not OCR)"
        )
    return elements
