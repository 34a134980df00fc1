"""Markdown → elements with markdown-it-py's token stream (CommonMark + GFM tables).

The tokens already say what every block is, so there is no HTML round trip and no text
classification. Raw HTML blocks keep their text, without the tags.
"""

from __future__ import annotations

import html
import re
import threading

from markdown_it import MarkdownIt
from markdown_it.token import Token

from ingest.parsers.elements import Element, clean

# YAML front matter: a `---` line, `key:` lines, a closing `---` (or `...`) line.
_FRONT_MATTER = re.compile(
    r"\A---[ \t]*\n(?=[\w-]+[ \t]*:).*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S
)
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_TAG = re.compile(r"<[^>]*>")

_md: MarkdownIt | None = None
_md_lock = threading.Lock()


def _parser() -> MarkdownIt:
    global _md
    with _md_lock:
        if _md is None:
            _md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
        return _md


def _inline_text(children: list[Token] | None) -> str:
    parts: list[str] = []
    for tok in children or []:
        if tok.type in ("text", "code_inline", "image"):  # an image shows its alt text
            parts.append(tok.content)
        elif tok.type in ("softbreak", "hardbreak"):
            parts.append("\n")
    return "".join(parts)


def _html_text(block: str) -> str:
    return clean(html.unescape(_TAG.sub(" ", _COMMENT.sub(" ", block))))


def parse_markdown(text: str) -> list[Element]:
    """Markdown source → elements in reading order (Title levels are the # counts)."""
    tokens = _parser().parse(_FRONT_MATTER.sub("", text.removeprefix("\ufeff"), count=1))
    out: list[Element] = []
    heading = 0  # level of the heading being read, 0 outside headings
    list_depth = 0
    fresh_item: list[bool] = []  # per open list item: has its first block been seen?
    rows: list[str] | None = None
    row: list[str] | None = None

    def emit(category: str, body: str, level: int = 0) -> None:
        if body.strip():
            out.append(Element(category, body, level))
        if fresh_item:
            fresh_item[-1] = False

    for tok in tokens:
        kind = tok.type
        if kind == "heading_open":
            heading = int(tok.tag[1:])
        elif kind == "heading_close":
            heading = 0
        elif kind in ("bullet_list_open", "ordered_list_open"):
            list_depth += 1
        elif kind in ("bullet_list_close", "ordered_list_close"):
            list_depth -= 1
        elif kind == "list_item_open":
            fresh_item.append(True)
        elif kind == "list_item_close":
            fresh_item.pop()
        elif kind in ("fence", "code_block"):
            emit("CodeSnippet", tok.content.strip("\n").rstrip())
        elif kind == "html_block":
            emit("NarrativeText", _html_text(tok.content))
        elif kind == "table_open":
            rows = []
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close" and rows is not None and row is not None:
            if any(row):
                rows.append(" | ".join(row))
            row = None
        elif kind == "table_close" and rows is not None:
            emit("Table", "\n".join(rows))
            rows = None
        elif kind == "inline":
            body = clean(_inline_text(tok.children))
            if heading:
                emit("Title", body, heading)
            elif row is not None:
                row.append(body)
            elif fresh_item and fresh_item[-1]:
                emit("ListItem", body, list_depth - 1)
            else:
                emit("NarrativeText", body)
    return out
