"""Request and response bodies. Request models are built per app from settings, so the
OpenAPI document shows the limits this server enforces (query length, top_k)."""

from __future__ import annotations

import re
from functools import partial
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    create_model,
)
from pydantic_core import PydanticCustomError

from retrieval.filters import INT64_MAX

_SURROGATE = re.compile("[\ud800-\udfff]")
FILTERS_DOC = (
    'Equality {"doc_id": "a"}, any-of {"metadata.lang": ["en", "de"]}, range '
    '{"version": {"gte": 2}}, negation {"metadata.doc_type": {"not": "release-notes"}} '
    '(a value or a list), prefix {"doc_id": {"prefix": "topics/"}} and '
    '{"doc_id": {"not_prefix": "releases/"}} on string fields; all must hold. Fields: '
    "doc_id, title, source, mime, version, chunk_index, metadata.<key>; values are strings, "
    "booleans or signed 64-bit integers, range bounds finite numbers. Anything else is a "
    "422 naming the field."
)


def _query(limit: int, value: str) -> str:
    if len(value) > limit:
        raise PydanticCustomError(
            "string_too_long",
            "query is {length} characters; the limit is {limit}",
            {"length": len(value), "limit": limit},
        )
    if _SURROGATE.search(value):
        raise PydanticCustomError("string_unicode", "query contains a lone surrogate")
    query = value.strip()
    if not query:
        raise PydanticCustomError("string_blank", "query is empty")
    return query


def _top_k(limit: int, value: int) -> int:
    if not 1 <= value <= limit:
        raise PydanticCustomError(
            "top_k_range", "top_k must be between 1 and {limit}", {"limit": limit}
        )
    return value


class PromptSelector(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Default: grounded-answer.")
    label: str | None = Field(None, description="Release label; default: production.")
    version: int | None = Field(
        None, ge=1, le=INT64_MAX, description="Exact version (wins over label)."
    )


class SearchBody(Protocol):
    """What routes read from a RetrieveRequest (built per app by `request_models`)."""

    query: str
    top_k: int
    mode: Literal["hybrid", "dense", "sparse"]
    filters: dict[str, Any]
    group: Literal["section", "chunk"]


class AnswerBody(SearchBody, Protocol):
    """What routes read from an AnswerRequest: a search plus how to answer it."""

    prompt: PromptSelector | None
    stream: bool
    cache: bool
    provider: str | None


def request_models(max_query_chars: int, max_top_k: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """(RetrieveRequest, AnswerRequest) carrying these limits in validation and schema."""
    query = Annotated[
        str,
        AfterValidator(partial(_query, max_query_chars)),
        Field(
            description="What to search for; must contain a non-space character.",
            json_schema_extra={"minLength": 1, "maxLength": max_query_chars},
        ),
    ]
    top_k = Annotated[
        StrictInt,
        AfterValidator(partial(_top_k, max_top_k)),
        Field(
            description="Hits to return (an integer; booleans, strings and floats are refused).",
            json_schema_extra={"minimum": 1, "maximum": max_top_k},
        ),
    ]
    retrieve = create_model(
        "RetrieveRequest",
        __config__=ConfigDict(extra="forbid"),
        __doc__="A search: the same fields and rules for /retrieve and /answer.",
        query=(query, ...),
        top_k=(top_k, 5),
        mode=(
            Literal["hybrid", "dense", "sparse"],
            Field(
                "hybrid",
                description="hybrid fuses dense and sparse inside Qdrant with weighted RRF.",
            ),
        ),
        filters=(dict[str, Any], Field(default_factory=dict, description=FILTERS_DOC)),
        group=(
            Literal["section", "chunk"],
            Field(
                "section",
                description="section: one hit per document section, its text the section's "
                "matching chunks in reading order (`chunks` lists them); chunk: every "
                "matching chunk as its own hit.",
            ),
        ),
    )
    answer = create_model(
        "AnswerRequest",
        __base__=retrieve,
        __doc__="A search whose hits are answered from, with citations.",
        prompt=(PromptSelector | None, None),
        stream=(
            bool,
            Field(
                False,
                description="Server-Sent Events as the provider generates: `delta` events, "
                "`reset` when an answer is rejected mid-way, then `done` (the JSON answer, "
                "with its validated citations) or `error`.",
            ),
        ),
        cache=(
            bool,
            Field(
                True,
                strict=True,
                description="false: neither read nor write the semantic answer cache "
                "(evaluations, debugging: the timings then mean what they say).",
            ),
        ),
        provider=(
            str | None,
            Field(
                None,
                max_length=128,
                description="Ask only this provider of the answer chain, with no fallback "
                "(evaluations score each provider this way); names in GET /providers. "
                "Default: the whole chain in order.",
            ),
        ),
    )
    return retrieve, answer


class Citation(BaseModel):
    n: int
    doc_id: str
    version: int
    chunk_index: int | None = None
    title: str | None = None
    source: str | None = None
    text: str = ""


class AnswerResponse(BaseModel):
    answer: str
    citations: list[Citation]
    provider: str
    model: str
    prompt: str
    cached: bool
    refused: bool
    refusal_reason: str | None = Field(
        None, description="Why the service refused before asking a provider, when it did."
    )
    attempts: list[dict[str, str]] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    cache_similarity: float | None = None


class AnswerDelta(BaseModel):
    """`event: delta` of a streamed answer: more text from the provider answering."""

    text: str


class AnswerReset(BaseModel):
    """`event: reset`: discard the text received since the last reset; the provider's
    answer was rejected, and the next one of the chain (or the refusal) follows."""

    provider: str
    reason: str = Field(description="invalid_citations, error or deadline, as in `attempts`.")
    detail: str


class AnswerStreamError(BaseModel):
    """`event: error`: the stream ends without an answer. `status` is the HTTP status the
    JSON reply would have had (504: the answer deadline ran out)."""

    status: int
    detail: str


class PromptInfo(BaseModel):
    name: str
    version: int
    labels: list[str]
    description: str


class ProviderInfo(BaseModel):
    name: str
    kind: str
    model: str
    circuit: str = Field(description="closed, open (skipped for now) or half-open.")


class Hit(BaseModel):
    text: str
    score: float
    doc_id: str
    version: int
    chunk_index: int
    title: str | None = None
    source: str | None = None
    section: str | None = None
    path: list[str] = Field(
        default_factory=list, description="The headings above `section`, the page title first."
    )
    chunks: list[int] = Field(
        default_factory=list, description="Chunk indexes merged into this hit (section grouping)."
    )
    event_time: str | None = None
    indexed_at: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    model: str | None = Field(
        None, description="The embedding model of the index generation that served this hit."
    )


class RetrieveResponse(BaseModel):
    hits: list[Hit]
    mode: str
    took_ms: float


class DocumentInfo(BaseModel):
    doc_id: str
    version: int
    chunk_count: int
    indexed_at: str
    event_time: str | None = None
    title: str | None = None
    source: str | None = None


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="What an operator should know that does not make the service unready: "
        "e.g. `ingest.broker_state_lost` when the broker forgot committed offsets.",
    )


class ReindexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        min_length=1,
        max_length=1000,
        description="sentence-transformers model name or path, loadable offline on the server.",
    )


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(
        False, description="Switch even if the standby still has events to apply (lag > 0)."
    )


class NotReady(BaseModel):
    """503 from /readyz: which check failed."""

    detail: Readiness
