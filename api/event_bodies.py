"""What POST /documents takes, said exactly: the event contract (ingest/events.py) as JSON
Schema, with the rules the contract checks in code written into it, and the checks that
make the server take what that schema allows and nothing else.

The contract's model is lenient where JSON Schema is precise: it reads `0` or
`"2000-01-01"` as an `event_time` and takes base64 with stray padding; and it refuses what
JSON Schema allows: `7.0` as a version, an upsert without a body. Here the
document and the checks agree, so a request the OpenAPI document allows is never refused
and one it forbids is never published.
"""

from __future__ import annotations

import re
from typing import Any

from api.models import RFC3339
from ingest.events import DocumentEvent

MAX_EVENTS = 1000  # per POST /documents

# Canonical base64: whole quanta, padding only where it belongs.
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
_RFC3339 = re.compile(RFC3339)
_BASE64 = re.compile(BASE64)


# What Python's `\s` matches (str.isspace), spelled out for a character class; the
# suite checks it against Python's own set.
PYTHON_WHITESPACE = (
    r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028-\u2029\u202f"
    r"\u205f\u3000"
)


def portable(pattern: str) -> str:
    """`pattern` (Python's, as the contract checks it) with `\\s` spelled out: JSON Schema's
    and Rust's `\\s` are other sets (\\x1c-\\x1f, \\x85, \\ufeff), and an id the schema allows
    must be one the server takes. Only inside character classes, where the ids use it."""
    return pattern.replace("\\s]", PYTHON_WHITESPACE + "]")


def body_schema() -> dict[str, Any]:
    """One event, or a list of 1 to MAX_EVENTS."""
    event = DocumentEvent.model_json_schema()
    props = event["properties"]
    tenant = {k: v for k, v in props["tenant"].items() if k != "default"}
    tenant["readOnly"] = True  # the server sets it
    tenant["description"] = (
        "Set by the server: the key's tenant. Leave it out (the key's own is accepted too; "
        "any other is a 422)."
    )
    props["tenant"] = tenant
    props["metadata"]["additionalProperties"] = False  # keys must match the pattern
    for name in ("doc_id", "tenant"):
        props[name]["pattern"] = portable(props[name]["pattern"])
    groups = props["acl"]["anyOf"][0]["items"]
    groups["pattern"] = portable(groups["pattern"])
    # 64 bits said as OpenAPI says it (see retrieval.filters.INT64_SCHEMA); the model checks.
    del props["version"]["maximum"]
    props["version"]["format"] = "int64"
    props["content_base64"]["anyOf"][0]["pattern"] = BASE64
    props["event_time"]["pattern"] = RFC3339
    props["event_time"]["description"] += " Years 0001-9999, seconds 00-59."
    text = {"type": "string"}
    # An upsert carries its body: content, content_base64 or a source to fetch; never both
    # inline bodies.
    event["anyOf"] = [
        {"properties": {"op": {"const": "delete"}}},
        {"properties": {"content": text}, "required": ["content"]},
        {"properties": {"content_base64": text}, "required": ["content_base64"]},
        {"properties": {"source": {"type": "string", "minLength": 1}}, "required": ["source"]},
    ]
    event["not"] = {
        "properties": {"content": text, "content_base64": text},
        "required": ["content", "content_base64"],
    }
    batch = {"type": "array", "items": event, "minItems": 1, "maxItems": MAX_EVENTS}
    return {"anyOf": [event, batch]}


def precheck(item: Any) -> tuple[Any, list[tuple[str, str, str]]]:
    """The event as the contract's model should read it, and what `body_schema` refuses
    that the model would take, as (field, message, type). Whole floats are integers."""
    if not isinstance(item, dict):
        return item, []
    problems: list[tuple[str, str, str]] = []
    version = item.get("version")
    if isinstance(version, float) and version.is_integer():
        item = {**item, "version": int(version)}
    when = item.get("event_time")
    if "event_time" in item and not (isinstance(when, str) and _RFC3339.fullmatch(when)):
        problems.append(
            (
                "event_time",
                "must be an RFC 3339 date-time, e.g. 2026-12-07T06:00:00Z (years 0001-9999, "
                "seconds 00-59)",
                "datetime_format",
            )
        )
    body = item.get("content_base64")
    if isinstance(body, str) and not _BASE64.fullmatch(body):
        problems.append(
            ("content_base64", "must be canonical base64 (whole quanta, '=' padding)", "base64")
        )
    return item, problems
