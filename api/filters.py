"""Body filters → index conditions, with a 422 that names the filter.

/retrieve and /answer take the same `filters`; retrieval.filters parses them, and this
turns its FilterError into the 422 shape every other field error has.
"""

from __future__ import annotations

from typing import Any

from api.errors import invalid
from retrieval.filters import FilterError, parse_filters
from retrieval.store.types import Condition


def conditions_of(filters: dict[str, Any]) -> list[Condition]:
    """Body filters → conditions, or a 422 whose `loc` names the filter."""
    try:
        return parse_filters(filters)
    except FilterError as exc:
        loc = ("body", "filters", exc.field) if exc.field else ("body", "filters")
        raise invalid(loc, str(exc)) from exc
