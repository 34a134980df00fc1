"""Request filters → neutral index conditions, and the access conditions from credentials.

Pure functions: the API turns `FilterError` into a 422 that names the bad field
(`FilterError.field`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from retrieval.store.types import Condition, Match, MatchAny, Not, Prefix, Range

FILTERABLE = {"doc_id", "title", "source", "mime", "version", "chunk_index"}
# Typed fields: a value of the wrong type could never match, so it is an error, not 0 hits.
INTEGER_FIELDS = {"version", "chunk_index"}
STRING_FIELDS = {"doc_id", "title", "source", "mime"}
# Never filterable from a request: access comes from the API key, not the body.
PROTECTED = {"tenant", "acl"}
_METADATA_KEY = re.compile(r"^metadata\.[A-Za-z0-9_\-]{1,64}$")
_RANGE_OPS = {"gte", "gt", "lte", "lt"}
# Negation and prefix: {"doc_id": {"not_prefix": "releases/"}}, {"metadata.kind": {"not": "x"}}
_MATCH_OPS = {"not", "prefix", "not_prefix"}
MAX_PREFIX_CHARS = 512
MAX_ANY_VALUES = 256
# Qdrant stores integers as signed 64-bit; a bigger one cannot match and fails deep inside.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# ...said in JSON Schema as OpenAPI says it, not as minimum/maximum: past 2**53 validators
# disagree on those (jsonschema-rs compares in floats, where 2**63 - 1 is 2**63), and
# schemathesis 4 generates "valid" integers beyond them.
INT64_SCHEMA = {"type": "integer", "format": "int64"}
_SURROGATE = re.compile("[\ud800-\udfff]")


class FilterError(ValueError):
    """A filter the caller sent cannot be applied; the message says why, `field` says where."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def printable(text: str) -> str:
    """`text` safe to put in a UTF-8 reply: lone surrogates become `\\udxxx` escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_field(name: str) -> None:
    if _SURROGATE.search(name):
        raise FilterError(
            f"unknown filter field '{printable(name)}': it contains a lone surrogate", name
        )
    if name in PROTECTED:
        raise FilterError(
            f"field '{name}' cannot be filtered: tenant and groups come from your API key", name
        )
    if name not in FILTERABLE and not _METADATA_KEY.fullmatch(name):
        allowed = ", ".join(sorted(FILTERABLE))
        raise FilterError(
            f"unknown filter field '{name}'; use one of {allowed} or metadata.<key>", name
        )


def _int64(name: str, v: int, what: str = "integer values") -> int:
    if not INT64_MIN <= v <= INT64_MAX:
        raise FilterError(
            f"filter '{name}': {what} must fit in a signed 64-bit integer "
            f"({INT64_MIN} to {INT64_MAX})",
            name,
        )
    return v


def _whole(v: Any) -> Any:
    """JSON's 7.0 is the integer 7 (JSON Schema agrees), so it filters as 7."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _scalar(name: str, v: Any) -> str | int | bool:
    v = _whole(v)
    if name in INTEGER_FIELDS and (isinstance(v, bool) or not isinstance(v, int)):
        raise FilterError(f"filter '{name}': values must be integers (got {v!r:.40})", name)
    if name in STRING_FIELDS and not isinstance(v, str):
        raise FilterError(f"filter '{name}': values must be strings (got {v!r:.40})", name)
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return _int64(name, v)
    if isinstance(v, str):
        if _SURROGATE.search(v):
            raise FilterError(
                f"filter '{name}': string values must be valid Unicode (no lone surrogates)",
                name,
            )
        return v
    raise FilterError(f"filter '{name}': values must be strings, integers or booleans", name)


def _bound(name: str, op: str, v: Any) -> float:
    v = _whole(v)  # a whole number is an integer: it fits 64 bits like every other here
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise FilterError(f"filter '{name}': range bound '{op}' must be a number", name)
    if isinstance(v, int):
        return float(_int64(name, v, f"range bound '{op}'"))
    if not math.isfinite(v):
        raise FilterError(f"filter '{name}': range bound '{op}' must be a finite number", name)
    return v


def _equality(name: str, spec: Any) -> Match | MatchAny:
    """A scalar is equality, a list is any-of."""
    if isinstance(spec, list):
        if not spec or len(spec) > MAX_ANY_VALUES:
            raise FilterError(f"filter '{name}': any-of takes 1 to {MAX_ANY_VALUES} values", name)
        values = [_scalar(name, v) for v in spec]
        if len({type(v) for v in values}) != 1 or isinstance(values[0], bool):
            raise FilterError(
                f"filter '{name}': any-of values must be all strings or all integers", name
            )
        return MatchAny(name, tuple(values))
    if isinstance(spec, dict):
        raise FilterError(f"filter '{name}': 'not' takes a value or a list of values", name)
    return Match(name, _scalar(name, spec))


def _prefix(name: str, op: str, v: Any) -> Prefix:
    if name in INTEGER_FIELDS:
        raise FilterError(f"filter '{name}': '{op}' needs a string field", name)
    if not isinstance(v, str) or not v or len(v) > MAX_PREFIX_CHARS:
        raise FilterError(
            f"filter '{name}': '{op}' takes a string of 1 to {MAX_PREFIX_CHARS} characters", name
        )
    return Prefix(name, str(_scalar(name, v)))


def _operators(name: str, spec: dict[str, Any]) -> list[Condition]:
    """`{"gte": 2, "not": 5}`, `{"prefix": "guides/", "not_prefix": "guides/old/"}`, …"""
    unknown = set(spec) - _RANGE_OPS - _MATCH_OPS
    if not spec or unknown:
        raise FilterError(
            f"filter '{name}': an object takes a range (gte, gt, lte, lt) or not, prefix, "
            "not_prefix",
            name,
        )
    ranges = {op: v for op, v in spec.items() if op in _RANGE_OPS}
    if ranges and name in STRING_FIELDS:
        raise FilterError(f"filter '{name}': a range needs a numeric field", name)
    out: list[Condition] = []
    if ranges:
        out.append(Range(name, **{op: _bound(name, op, v) for op, v in ranges.items()}))
    if "not" in spec:
        out.append(Not(_equality(name, spec["not"])))
    if "prefix" in spec:
        out.append(_prefix(name, "prefix", spec["prefix"]))
    if "not_prefix" in spec:
        out.append(Not(_prefix(name, "not_prefix", spec["not_prefix"])))
    return out


def json_schema() -> dict[str, Any]:
    """The grammar `parse_filters` takes, as JSON Schema: what it accepts is exactly what
    this allows (lone surrogates aside, which JSON Schema cannot name), so the OpenAPI
    document never allows a filter the server refuses, nor the reverse."""
    string = {"type": "string"}
    integer = INT64_SCHEMA
    # A whole number is an integer (and fits 64 bits); any other finite number goes.
    bound = {"anyOf": [integer, {"type": "number", "not": {"type": "integer"}}]}
    prefix = {"type": "string", "minLength": 1, "maxLength": MAX_PREFIX_CHARS}

    def any_of(item: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_ANY_VALUES}

    def field(values: list[dict[str, Any]], ops: dict[str, Any]) -> dict[str, Any]:
        operators = {
            "type": "object",
            "properties": {"not": {"anyOf": values}, **ops},
            "additionalProperties": False,
            "minProperties": 1,
        }
        return {"anyOf": [*values, operators]}

    ranges = dict.fromkeys(sorted(_RANGE_OPS), bound)
    prefixes = dict.fromkeys(("prefix", "not_prefix"), prefix)
    text = field([string, any_of(string)], prefixes)
    number = field([integer, any_of(integer)], ranges)
    # metadata.<key>: strings, integers or booleans; any-of all strings or all integers.
    meta = field(
        [string, integer, {"type": "boolean"}, any_of(string), any_of(integer)],
        {**ranges, **prefixes},
    )
    return {
        "type": "object",
        "properties": {
            **dict.fromkeys(sorted(STRING_FIELDS), text),
            **dict.fromkeys(sorted(INTEGER_FIELDS), number),
        },
        "patternProperties": {_METADATA_KEY.pattern: meta},
        "additionalProperties": False,
    }


def parse_filters(filters: dict[str, Any] | None) -> list[Condition]:
    """Request filters → conditions, all of which must hold.

    `{"doc_id": "a"}` equality, `{"metadata.lang": ["en", "de"]}` any-of,
    `{"version": {"gte": 2}}` range, `{"metadata.doc_type": {"not": "release-notes"}}`
    negation (a value or a list), `{"doc_id": {"prefix": "topics/"}}` and
    `{"doc_id": {"not_prefix": "releases/"}}` on string fields.
    """
    out: list[Condition] = []
    for name, spec in (filters or {}).items():
        _check_field(name)
        if isinstance(spec, dict):
            out.extend(_operators(name, spec))
        else:
            out.append(_equality(name, spec))
    return out


def access_conditions(tenant: str, groups: list[str]) -> list[Condition]:
    """The caller's tenant and groups, applied inside every Qdrant query."""
    return [Match("tenant", tenant), MatchAny("acl", tuple(groups) or ("\x00no-group",))]
