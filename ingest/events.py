"""The document event contract (Kafka value; key = doc_id). Schema file: document_event.schema.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_PATH = Path(__file__).with_name("document_event.schema.json")

MetadataValue = str | int | float | bool


class DocumentEvent(BaseModel):
    """One change to one document. `version` is monotonic per (tenant, doc_id)."""

    model_config = ConfigDict(extra="forbid", title="DocumentEvent")

    op: Literal["upsert", "delete"]
    doc_id: str = Field(min_length=1, max_length=512, pattern=r"^\S(.*\S)?$")
    version: int = Field(ge=0, description="Monotonic per document; older or equal is ignored.")
    tenant: str = Field("default", min_length=1, max_length=128)
    acl: list[str] = Field(
        default_factory=lambda: ["public"], description="Groups allowed to read the document."
    )
    title: str | None = Field(None, max_length=1000)
    source: str | None = Field(None, description="URI; file:// is fetched when content is absent.")
    mime: str = Field("text/plain", description="text/markdown, text/x-rst, text/html, ...")
    content: str | None = Field(None, description="Inline text of the document.")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    event_time: datetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="RFC 3339; when the producer saw the change.",
    )

    @model_validator(mode="after")
    def _upsert_needs_a_body(self) -> DocumentEvent:
        if self.op == "upsert" and self.content is None and not self.source:
            raise ValueError("an upsert needs inline 'content' or a fetchable 'source'")
        return self

    def key(self) -> bytes:
        return self.doc_id.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class MalformedEvent(ValueError):
    """The bytes on the topic are not a valid DocumentEvent; the message says why."""


def decode_event(value: bytes | None) -> DocumentEvent:
    if value is None:
        raise MalformedEvent("empty message value (tombstone records are not events)")
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"value is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise MalformedEvent("value must be a JSON object")
    try:
        return DocumentEvent.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
        )
        raise MalformedEvent(f"invalid event: {problems}") from exc


def json_schema() -> dict:
    return DocumentEvent.model_json_schema()


if __name__ == "__main__":  # regenerate the schema file: python -m ingest.events
    SCHEMA_PATH.write_text(json.dumps(json_schema(), indent=2) + "\n")
    print(f"wrote {SCHEMA_PATH}")
