"""The document event contract (Kafka value; key = doc_id). Schema file: document_event.schema.json.

Everything in an event is untrusted: types are strict (a version is a JSON integer, not
`true`, `"7"` or `7.0`), ids carry no control characters (so `tenant`/`doc_id` pairs can
never collide in derived ids), numbers are finite and fit Qdrant's 64-bit integers, and
text is valid Unicode. An event that breaks any of this goes to the dead-letter topic.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

SCHEMA_PATH = Path(__file__).with_name("document_event.schema.json")

INT64_MAX = 2**63 - 1
# No control characters (\x00-\x1f, \x7f), no leading or trailing whitespace.
_ID = r"^[^\x00-\x1f\x7f\s]([^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s])?$"
_ID_RE = re.compile(_ID)


def _clean_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):  # match() would let "$" pass a trailing newline
        raise ValueError("must not contain control characters or start or end with whitespace")
    return value


def _id(max_length: int) -> object:
    return Annotated[
        StrictStr,
        Field(min_length=1, max_length=max_length, json_schema_extra={"pattern": _ID}),
        AfterValidator(_clean_id),
    ]


Id = _id(512)
Group = _id(128)
Tenant = _id(128)
MetadataKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
MetadataValue = (
    Annotated[StrictStr, Field(max_length=4096)]
    | StrictBool
    | Annotated[StrictInt, Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
)
DEFAULT_ACL = ("public",)


class DocumentEvent(BaseModel):
    """One change to one document. `version` is monotonic per (tenant, doc_id).

    Equal versions: the first one applied wins. An event whose version is not newer than
    the indexed one (tombstones included) is ignored, inside a batch and across batches.
    """

    model_config = ConfigDict(extra="forbid", title="DocumentEvent")

    op: Literal["upsert", "delete"]
    doc_id: Id
    version: StrictInt = Field(
        ge=0, le=INT64_MAX, description="Monotonic per document; older or equal is ignored."
    )
    tenant: Tenant = "default"
    acl: list[Group] | None = Field(
        None,
        max_length=256,
        description="Groups allowed to read the document. Upserts default to "
        '["public"]; a delete keeps the groups of the document it deletes.',
    )
    title: StrictStr | None = Field(None, max_length=1000)
    source: StrictStr | None = Field(
        None,
        max_length=4096,
        description="URI. file:// is read only when content is absent and the path lies "
        "inside a folder the operator allowed (FRESHRAG_SOURCE_ROOTS).",
    )
    mime: StrictStr = Field(
        "text/plain", max_length=255, description="text/markdown, text/x-rst, text/html, ..."
    )
    content: StrictStr | None = Field(None, description="Inline text of the document.")
    content_base64: StrictStr | None = Field(
        None, description="Inline binary body (PDF, DOCX), base64; instead of content."
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=64)
    event_time: datetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="RFC 3339; when the producer saw the change.",
    )

    @model_validator(mode="after")
    def _body_rules(self) -> DocumentEvent:
        if self.content is not None and self.content_base64 is not None:
            raise ValueError("send either 'content' or 'content_base64', not both")
        if (
            self.op == "upsert"
            and self.content is None
            and self.content_base64 is None
            and not self.source
        ):
            raise ValueError(
                "an upsert needs inline 'content', 'content_base64' or a fetchable 'source'"
            )
        return self

    @property
    def readers(self) -> list[str]:
        """The groups an upsert grants: its `acl`, or public when none was given."""
        return list(self.acl) if self.acl is not None else list(DEFAULT_ACL)

    def binary_body(self) -> bytes | None:
        if self.content_base64 is None:
            return None
        try:
            return base64.b64decode(self.content_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedEvent(f"content_base64 is not valid base64: {exc}") from exc

    def key(self) -> bytes:
        return self.doc_id.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class MalformedEvent(ValueError):
    """The bytes on the topic are not a valid DocumentEvent; the message says why."""


def _reject_constant(name: str) -> float:
    raise MalformedEvent(f"{name} is not a valid JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedEvent(f"number {text[:40]} does not fit a 64-bit float")
    return value


# A JSON \u escape of a UTF-16 surrogate: only then can the decoded text be invalid Unicode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode_event(value: bytes | None) -> DocumentEvent:
    if value is None:
        raise MalformedEvent("empty message value (tombstone records are not events)")
    try:
        raw = json.loads(value, parse_constant=_reject_constant, parse_float=_finite_float)
    except MalformedEvent as exc:
        raise MalformedEvent(f"value is not JSON: {exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedEvent(f"value is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MalformedEvent("value must be a JSON object")
    if _SURROGATE_ESCAPE.search(value):
        try:
            json.dumps(raw, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedEvent(
                "value is not valid Unicode: it holds an unpaired UTF-16 surrogate escape"
            ) from exc
    try:
        event = DocumentEvent.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
        )
        raise MalformedEvent(f"invalid event: {problems}") from exc
    event.binary_body()  # a body that is not base64 is malformed, not unparseable
    return event


def json_schema() -> dict:
    return DocumentEvent.model_json_schema()


if __name__ == "__main__":  # regenerate the schema file: python -m ingest.events
    SCHEMA_PATH.write_text(json.dumps(json_schema(), indent=2) + "\n")
    print(f"wrote {SCHEMA_PATH}")
