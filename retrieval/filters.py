"""Request filters → neutral index conditions, and the access conditions from credentials.

Pure functions: the API turns `FilterError` into a 422 that names the bad field.
"""

from __future__ import annotations

import re
from typing import Any

from retrieval.index import Condition, Match, MatchAny, Range

FILTERABLE = {"doc_id", "title", "source", "mime", "version", "chunk_index"}
# Never filterable from a request: access comes from the API key, not the body.
PROTECTED = {"tenant", "acl"}
_METADATA_KEY = re.compile(r"^metadata\.[A-Za-z0-9_\-]{1,64}$")
_RANGE_OPS = {"gte", "gt", "lte", "lt"}
MAX_ANY_VALUES = 256


class FilterError(ValueError):
    """A filter the caller sent cannot be applied; the message says why."""


def _check_field(name: str) -> None:
    if name in PROTECTED:
        raise FilterError(
            f"field '{name}' cannot be filtered: tenant and groups come from your API key"
        )
    if name not in FILTERABLE and not _METADATA_KEY.match(name):
        allowed = ", ".join(sorted(FILTERABLE))
        raise FilterError(f"unknown filter field '{name}'; use one of {allowed} or metadata.<key>")


def _scalar(name: str, v: Any) -> str | int | bool:
    if isinstance(v, bool | int | str):
        return v
    raise FilterError(f"filter '{name}': values must be strings, integers or booleans")


def parse_filters(filters: dict[str, Any] | None) -> list[Condition]:
    """`{"doc_id": "a", "metadata.lang": ["en", "de"], "version": {"gte": 2}}` → conditions."""
    out: list[Condition] = []
    for name, spec in (filters or {}).items():
        _check_field(name)
        if isinstance(spec, dict):
            if not spec or not set(spec) <= _RANGE_OPS:
                raise FilterError(f"filter '{name}': a range takes only gte, gt, lte, lt")
            bounds = {}
            for op, v in spec.items():
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise FilterError(f"filter '{name}': range bound '{op}' must be a number")
                bounds[op] = float(v)
            out.append(Range(name, **bounds))
        elif isinstance(spec, list):
            if not spec or len(spec) > MAX_ANY_VALUES:
                raise FilterError(f"filter '{name}': any-of takes 1 to {MAX_ANY_VALUES} values")
            values = [_scalar(name, v) for v in spec]
            if len({type(v) for v in values}) != 1 or isinstance(values[0], bool):
                raise FilterError(
                    f"filter '{name}': any-of values must be all strings or all integers"
                )
            out.append(MatchAny(name, tuple(values)))
        else:
            out.append(Match(name, _scalar(name, spec)))
    return out


def access_conditions(tenant: str, groups: list[str]) -> list[Condition]:
    """The caller's tenant and groups, applied inside every Qdrant query."""
    return [Match("tenant", tenant), MatchAny("acl", tuple(groups) or ("\x00no-group",))]
