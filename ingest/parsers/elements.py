"""What every parser produces: a flat list of typed text elements.

The chunker only needs to know where sections start (Title), what must stay verbatim
(CodeSnippet) and how to lay out the rest, so this is all a parser has to say.
"""

from __future__ import annotations

from dataclasses import dataclass


class UnsupportedDocument(ValueError):
    """The document cannot be parsed (type, size or source); goes to the DLQ."""


@dataclass(frozen=True, slots=True)
class Element:
    category: str  # Title, NarrativeText, ListItem, CodeSnippet, Table, ...
    text: str
    level: int = 0  # Title: heading depth (1 = document title); ListItem: nesting depth


def clean(text: str) -> str:
    """One line of prose: source line breaks and runs of spaces collapse to single spaces."""
    return " ".join(text.split())
