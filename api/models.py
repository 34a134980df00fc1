"""Request and response bodies. Request models are built per app from settings, so the
OpenAPI document shows the limits this server enforces (query length, top_k)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import partial
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    create_model,
)
from pydantic_core import PydanticCustomError

from api.ranking import ranking_fields
from retrieval.filters import INT64_MAX, INT64_MIN
from retrieval.filters import json_schema as filters_schema

_SURROGATE = re.compile("[\ud800-\udfff]")
# A query needs one character that is not one of these, in every regex dialect alike
# (Python's, JSON Schema's and Rust's \s disagree on Unicode spaces and \x1c-\x1f).
_BLANK = " \t\n\x0b\x0c\r"
_NOT_BLANK = "[^ \\t\\n\\x0b\\x0c\\r]"
# RFC 3339 date-times as Python holds them: years 0001-9999, seconds 00-59 (no leap
# second). In one dialect of regex that Python, JSON Schema and Rust read alike.
DATE_TIME = (
    r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
    r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
)
UTC_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
RFC3339 = f"^{DATE_TIME}{UTC_OFFSET}$"
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
    query = value.strip(_BLANK)
    if not query:
        raise PydanticCustomError("string_blank", "query is empty")
    return query.strip() or query


def _whole(value: Any) -> Any:
    """JSON Schema's `integer` is a value, not a spelling: 7.0 is 7. `true`, `"7"` and 7.5
    stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema has it (see `_whole`), and nothing else.
JSONInt = Annotated[StrictInt, BeforeValidator(_whole)]


def _int64(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise PydanticCustomError(
            "int64",
            "must be a signed 64-bit integer ({low} to {high})",
            {"low": INT64_MIN, "high": INT64_MAX},
        )
    return value


# A signed 64-bit integer, said as OpenAPI says it (`format: int64`) rather than with a
# maximum that validators read differently past 2**53 (retrieval.filters.INT64_SCHEMA).
# Bounds go before BeforeValidator, or pydantic writes them as `ge`, which no schema reads.
_FORMAT_INT64 = Field(json_schema_extra={"format": "int64"})
# A version in a query parameter (its digits): 0 to 2**63 - 1.
QueryVersion = Annotated[int, Field(ge=0), AfterValidator(_int64), _FORMAT_INT64]


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
    version: (
        Annotated[
            StrictInt, Field(ge=1), BeforeValidator(_whole), AfterValidator(_int64), _FORMAT_INT64
        ]
        | None
    ) = Field(None, description="Exact version (wins over label).")


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


def _provider(names: tuple[str, ...], value: str) -> str:
    if value not in names:
        raise PydanticCustomError(
            "provider",
            "no provider named {name} in the answer chain; configured: {known}",
            {"name": repr(value[:128]), "known": ", ".join(names)},
        )
    return value


def request_models(
    max_query_chars: int,
    max_top_k: int,
    providers: Sequence[str] | None = None,
    reranker: bool = False,
) -> tuple[type[BaseModel], type[BaseModel]]:
    """(RetrieveRequest, AnswerRequest) carrying these limits in validation and schema.

    `providers`: the answer chain's names, which `provider` must be one of (an enum in the
    schema, so a request the document allows is never refused); None: any name.
    `reranker`: whether the server has one (api/ranking.py: the ranking stages' fields)."""
    query = Annotated[
        str,
        AfterValidator(partial(_query, max_query_chars)),
        Field(
            description="What to search for; must contain a character other than ASCII "
            "whitespace (space, tab, line breaks).",
            json_schema_extra={
                "minLength": 1,
                "maxLength": max_query_chars,
                "pattern": _NOT_BLANK,
            },
        ),
    ]
    top_k = Annotated[
        JSONInt,
        AfterValidator(partial(_top_k, max_top_k)),
        Field(
            description="Hits to return: an integer (3.0 is 3; booleans, strings and "
            "fractions are refused).",
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
        filters=(
            dict[str, Any],
            Field(
                default_factory=dict, description=FILTERS_DOC, json_schema_extra=filters_schema()
            ),
        ),
        group=(
            Literal["section", "chunk"],
            Field(
                "section",
                description="section: one hit per document section, its text the section's "
                "matching chunks in reading order (`chunks` lists them); chunk: every "
                "matching chunk as its own hit.",
            ),
        ),
        **ranking_fields(reranker),
    )
    provider_doc = (
        "Ask only this provider of the answer chain, with no fallback (evaluations score "
        "each provider this way); names in GET /providers. Default: the whole chain in order."
    )
    provider: Any = Annotated[str, Field(max_length=128)]
    if providers is not None:
        names = tuple(providers)
        provider = Annotated[
            str,
            AfterValidator(partial(_provider, names)),
            Field(json_schema_extra={"enum": list(names)}),
        ]
    answer = create_model(
        "AnswerRequest",
        __base__=retrieve,
        __doc__="A search whose hits are answered from, with citations.",
        prompt=(PromptSelector | None, None),
        stream=(
            StrictBool,
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
        provider=(provider | None, Field(None, description=provider_doc)),
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
    timings: dict[str, float] = Field(
        default_factory=dict, description="Stages' own times: rerank_ms when a reranker ran."
    )


class DocumentInfo(BaseModel):
    doc_id: str
    version: int
    chunk_count: int
    indexed_at: str
    event_time: str | None = None
    title: str | None = None
    source: str | None = None


class DocumentPending(BaseModel):
    """202 from GET /documents/{doc_id}?min_version=N: the wait ended before version N was
    searchable. Not a failure: the version may still be on its way; ask again."""

    doc_id: str
    min_version: int = Field(description="The version asked for.")
    version: int | None = Field(
        None,
        description="The version indexed now, if any this key may read (a deleted one "
        "counts, with `deleted`); null: none.",
    )
    deleted: bool = Field(False, description="Whether `version` is a delete.")
    detail: str = Field(description="The same, in words.")


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


class TuneRequest(BaseModel):
    """`POST /admin/tune`: which chunks to learn from, and how long."""

    model_config = ConfigDict(extra="forbid")
    tenant: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Learn from this tenant's chunks only; absent: every tenant's.",
    )
    steps: int | None = Field(
        None, ge=10, le=5000, description="Training steps. Default: FRESHRAG_TUNE_STEPS."
    )
    max_seconds: float | None = Field(
        None,
        ge=30,
        le=86400,
        description="Training time budget. Default: FRESHRAG_TUNE_MAX_SECONDS.",
    )


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: StrictBool = Field(
        False, description="Switch even if the standby still has events to apply (lag > 0)."
    )


class NotReady(BaseModel):
    """503 from /readyz: which check failed."""

    detail: Readiness
