"""Citation checks: every [n] must point at a context the model was given.

A citation is a bracketed source number in prose: `[2]`, `[1][3]` or `[1, 3]`. Brackets
in code are not citations: `a[0]` or `m[3]` (an index right after a name, a `]` or a
`)`), and anything inside inline code or a fenced code block, which extractive answers
quote verbatim.
"""

from __future__ import annotations

import re

from retrieval.answer.prompts import REFUSAL

_FENCED = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
_CITE = re.compile(r"(?<![\w\])])((?:\[\d{1,3}(?:\s*,\s*\d{1,3})*\])+)")
_NUMBER = re.compile(r"\d{1,3}")


class CitationError(ValueError):
    """The answer cites nothing, or cites a source it was not given."""


def is_refusal(text: str) -> bool:
    return text.strip().rstrip(".").lower() == REFUSAL.rstrip(".").lower()


def prose(text: str) -> str:
    """The answer without its code: fenced blocks and inline code spans become blanks."""
    text = _FENCED.sub(" ", text)
    return _INLINE_CODE.sub(" ", text)


def citation_numbers(text: str) -> list[int]:
    """Every source number cited in the prose of `text`, in order, repeats included."""
    return [int(n) for run in _CITE.findall(prose(text)) for n in _NUMBER.findall(run)]


def cited_sources(text: str, n_contexts: int) -> list[int]:
    """1-based source numbers cited, in first-cited order; raises when the answer is not grounded."""
    numbers = citation_numbers(text)
    if not numbers:
        raise CitationError("the answer cites no source")
    bad = sorted({n for n in numbers if not 1 <= n <= n_contexts})
    if bad:
        raise CitationError(f"the answer cites {bad}, but only sources 1..{n_contexts} were given")
    return list(dict.fromkeys(numbers))
