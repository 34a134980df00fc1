"""Citation checks: every [n] must point at a context the model was given."""

from __future__ import annotations

import re

from retrieval.prompts import REFUSAL

_CITE = re.compile(r"\[(\d{1,3})\]")


class CitationError(ValueError):
    """The answer cites nothing, or cites a source it was not given."""


def is_refusal(text: str) -> bool:
    return text.strip().rstrip(".").lower() == REFUSAL.rstrip(".").lower()


def cited_sources(text: str, n_contexts: int) -> list[int]:
    """1-based source numbers cited, in first-cited order; raises when the answer is not grounded."""
    numbers = [int(m) for m in _CITE.findall(text)]
    if not numbers:
        raise CitationError("the answer cites no source")
    bad = sorted({n for n in numbers if not 1 <= n <= n_contexts})
    if bad:
        raise CitationError(f"the answer cites {bad}, but only sources 1..{n_contexts} were given")
    return list(dict.fromkeys(numbers))
