"""What the sync and async clients share: request bodies, headers, the retry policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from freshrag_client.errors import is_busy
from freshrag_client.models import Group, Mode, PromptSelector

DEFAULT_URL = "http://127.0.0.1:8000"
# How long an unhurried caller waits in total per request before a busy server's 503
# reaches it: four attempts, each after the Retry-After the server sent (capped).
DEFAULT_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT = 30.0
# A long-poll on GET /documents is re-sent after a 504 no sooner than this, so a server
# whose waits are capped at 0 s is polled, not hammered.
POLL_INTERVAL_S = 0.5


def headers(
    api_key: str | None, generation: str | None, extra: Mapping[str, str] | None
) -> dict[str, str]:
    out = {"Accept": "application/json"}
    if api_key is not None:
        out["Authorization"] = f"Bearer {api_key}"
    if generation is not None:  # "standby": the generation `freshrag reindex` builds
        out["X-FreshRAG-Generation"] = generation
    out.update(extra or {})
    return out


def search_body(
    query: str,
    filters: Mapping[str, Any] | None,
    mode: Mode | None,
    top_k: int | None,
    group: Group | None,
    ranking: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """/retrieve's body; a field left as None is left out, so the server's default holds.
    `ranking`: the stages' fields (`RankingOptions`), sent as given."""
    body: dict[str, Any] = {"query": query}
    for name, value in (("filters", filters), ("mode", mode), ("top_k", top_k), ("group", group)):
        if value is not None:
            body[name] = dict(value) if name == "filters" else value
    body.update({k: v for k, v in (ranking or {}).items() if v is not None})
    return body


def answer_body(
    search: dict[str, Any],
    prompt: PromptSelector | Mapping[str, Any] | None,
    cache: bool | None,
    provider: str | None,
    stream: bool,
) -> dict[str, Any]:
    """/answer's body: a search plus how to answer it."""
    body = {**search, "stream": stream}
    if prompt is not None:
        selector = PromptSelector.model_validate(prompt)
        body["prompt"] = selector.model_dump(exclude_none=True)
    if cache is not None:
        body["cache"] = cache
    if provider is not None:
        body["provider"] = provider
    return body


def document_path(doc_id: str) -> str:
    """/documents/{doc_id}: ids may hold slashes (the route takes the rest of the path),
    anything else that means something in a URL is escaped."""
    return "/documents/" + quote(doc_id, safe="/")


def retry_policy(retries: int, max_wait: float) -> dict[str, Any]:
    """tenacity arguments: retry a busy 503 after its Retry-After (at most `max_wait`),
    `retries` times; then (and for any other error) the exception itself is raised."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        return min(max_wait, after if after is not None else 1.0)

    return {
        "retry": retry_if_exception(is_busy),
        "wait": wait,
        "stop": stop_after_attempt(retries + 1),
        "reraise": True,
    }
