"""What one request may ask of the optional ranking stages, and their limits.

Each field left None keeps the deployment's default (FRESHRAG_FUSION, FRESHRAG_DIVERSITY,
FRESHRAG_RECENCY, FRESHRAG_RERANKER ...). Light on purpose: the API's request models, and
with them the Python client, import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Literal

FusionMethod = Literal["rrf", "dbsf"]

# A half-life: `off`, or a whole number of hours, days or weeks up to 5 digits ("12h",
# "30d", "2w"). No minutes and no months: "m" would read either way. Python's regex
# dialect and JSON Schema's read it alike (FRESHRAG_RECENCY takes the same syntax).
HALF_LIFE_PATTERN = r"^(?:off|([1-9][0-9]{0,4})([hdw]))$"
_HALF_LIFE = re.compile(HALF_LIFE_PATTERN)
_UNIT_S = {"h": 3600.0, "d": 86400.0, "w": 604800.0}

# Request limits, shown in the OpenAPI document.
MIN_WEIGHT, MAX_WEIGHT = 0.01, 100.0
MAX_RERANK_CANDIDATES = 100


def half_life_s(text: str) -> float:
    """'30d' → seconds; 'off' → 0. ValueError for anything the pattern refuses.

    Matched as the pattern reads in a JSON Schema validator (`search`), so a value the
    OpenAPI document allows is never refused here."""
    found = _HALF_LIFE.search(text)
    if found is None:
        raise ValueError(
            "recency must be 'off' or a half-life: a whole number of hours, days or weeks "
            "(1-99999) and its unit, e.g. 12h, 30d or 2w"
        )
    number, unit = found.groups()
    return 0.0 if number is None else int(number) * _UNIT_S[unit]


@dataclass(frozen=True, slots=True)
class Stages:
    """One request's choices; None: the deployment's default."""

    fusion: FusionMethod | None = None
    dense_weight: float | None = None
    sparse_weight: float | None = None
    diversity: float | None = None  # MMR, 0 (off) to 1
    recency_s: float | None = None  # half-life in seconds, 0 = off
    rerank: bool | None = None
    rerank_candidates: int | None = None

    def asked(self) -> dict[str, Any]:
        """The fields the request set (cache scopes, traces)."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


DEFAULT_STAGES = Stages()
