"""Citation checks: every [n] must point at a context the model was given.

A citation is a bracketed source number in prose: `[2]`, `[1][3]` or `[1, 3]`. Brackets
in code are not citations: `a[0]` or `m[3]` (an index right after a name, a `]` or a
`)`), and anything inside inline code or a fenced code block, which extractive answers
quote verbatim.

A streamed answer is checked as it arrives (`check_partial`): a citation is judged once it
is complete and can no longer turn out to be code, so a bad one stops the provider at
once; whether the answer cites anything at all is known only at its end (`cited_sources`).
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


def settled_prose(partial: str) -> str:
    """The prose of a partial answer that more text cannot turn into code: closed fences and
    code spans become blanks, and everything from a still-open one on is left out."""
    text = prose(partial)
    cut = text.find("`")
    return text if cut < 0 else text[:cut]


def _outside(numbers: list[int], n_contexts: int) -> None:
    bad = sorted({n for n in numbers if not 1 <= n <= n_contexts})
    if bad:
        raise CitationError(f"the answer cites {bad}, but only sources 1..{n_contexts} were given")


def check_partial(partial: str, n_contexts: int) -> None:
    """Raises as soon as a complete citation in settled prose points outside 1..n_contexts.

    An incomplete one (`[1, 7` with its bracket still to come) waits for the next text.
    """
    _outside(
        [int(n) for run in _CITE.findall(settled_prose(partial)) for n in _NUMBER.findall(run)],
        n_contexts,
    )


def cited_sources(text: str, n_contexts: int) -> list[int]:
    """1-based source numbers cited, in first-cited order; raises when the answer is not grounded."""
    numbers = citation_numbers(text)
    if not numbers:
        raise CitationError("the answer cites no source")
    _outside(numbers, n_contexts)
    return list(dict.fromkeys(numbers))
