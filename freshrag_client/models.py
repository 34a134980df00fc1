"""The client's types: the API's own pydantic models, imported rather than copied.

`api.models` needs only pydantic (no FastAPI, no torch), so the client and the server
validate the same shapes and a field added on one side cannot be missed on the other.
Request arguments are plain keyword arguments: the server owns their defaults and
limits, so a field the caller leaves out is left out of the body too.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from api.models import (
    AnswerDelta,
    AnswerReset,
    AnswerResponse,
    AnswerStreamError,
    Citation,
    DocumentInfo,
    Hit,
    PromptInfo,
    PromptSelector,
    ProviderInfo,
    RetrieveResponse,
)

# The values /retrieve and /answer accept (tests check them against the server's schema).
Mode = Literal["hybrid", "dense", "sparse"]
Group = Literal["section", "chunk"]


class RankingOptions(TypedDict, total=False):
    """The ranking stages a search may set (keyword arguments of `retrieve` and `answer`;
    limits and meaning in the OpenAPI document). Left out: the server's default."""

    fusion: Literal["rrf", "dbsf"]
    dense_weight: float
    sparse_weight: float
    diversity: float
    recency: str  # a half-life such as "30d", "12h", "2w", or "off"
    rerank: bool
    rerank_candidates: int


# One event of a streamed answer, by its SSE name: `done` carries the whole answer.
AnswerEvent = AnswerDelta | AnswerReset | AnswerResponse | AnswerStreamError
EVENT_MODELS: dict[str, type[AnswerEvent]] = {
    "delta": AnswerDelta,
    "reset": AnswerReset,
    "done": AnswerResponse,
    "error": AnswerStreamError,
}

__all__ = [
    "AnswerDelta",
    "AnswerEvent",
    "AnswerReset",
    "AnswerResponse",
    "AnswerStreamError",
    "Citation",
    "DocumentInfo",
    "Group",
    "Hit",
    "Mode",
    "PromptInfo",
    "PromptSelector",
    "ProviderInfo",
    "RankingOptions",
    "RetrieveResponse",
    "hit_id",
    "hit_metadata",
]


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """What framework retrievers attach to a hit's text: every field /retrieve returned
    except the text itself, so a LlamaIndex node or LangChain document can be cited
    (doc_id, version, section, path) and judged for freshness (indexed_at) like the hit."""
    return hit.model_dump(mode="json", exclude={"text"})


def hit_id(hit: Hit) -> str:
    """A stable id for a hit: the same chunk of the same version always gets the same id."""
    return f"{hit.doc_id}@{hit.version}#{hit.chunk_index}"
