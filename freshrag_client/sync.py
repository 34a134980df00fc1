"""The blocking client: one `httpx.Client`, connection reuse, retries on a busy server."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Self, TypeVar, Unpack, overload

import httpx
from pydantic import BaseModel, TypeAdapter
from tenacity import Retrying

from freshrag_client import _common as common
from freshrag_client.errors import TimedOut, error_from, not_indexed_in_time
from freshrag_client.models import (
    AnswerResponse,
    DocumentInfo,
    Group,
    Mode,
    PromptInfo,
    PromptSelector,
    ProviderInfo,
    RankingOptions,
    RetrieveResponse,
)
from freshrag_client.streams import AnswerStream

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
_PROVIDERS = TypeAdapter(list[ProviderInfo])
_PROMPTS = TypeAdapter(list[PromptInfo])


class Client:
    """FreshRAG over HTTP, blocking. Use as a context manager, or call `close()`.

    A 503 with Retry-After (the service's lanes are full) is retried `retries` times
    after the wait the server asks for, capped at `max_retry_wait` seconds; every other
    error reply raises a `FreshRAGError` subclass carrying the server's message.
    `generation="standby"` reads the generation `freshrag reindex` is building.
    """

    def __init__(
        self,
        url: str = common.DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = common.DEFAULT_RETRIES,
        max_retry_wait: float = common.DEFAULT_MAX_RETRY_WAIT,
        generation: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self._retry = common.retry_policy(retries, max_retry_wait)
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout,
            headers=common.headers(api_key, generation, headers),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- endpoints ---------------------------------------------------------------------

    def retrieve(
        self,
        query: str,
        *,
        filters: Mapping[str, Any] | None = None,
        mode: Mode | None = None,
        top_k: int | None = None,
        group: Group | None = None,
        **ranking: Unpack[RankingOptions],
    ) -> RetrieveResponse:
        """POST /retrieve: cited hits, each with doc_id, version, section, indexed_at, score."""
        body = common.search_body(query, filters, mode, top_k, group, ranking)
        return self._model(RetrieveResponse, "POST", "/retrieve", json=body)

    @overload
    def answer(
        self,
        query: str,
        *,
        filters: Mapping[str, Any] | None = ...,
        mode: Mode | None = ...,
        top_k: int | None = ...,
        group: Group | None = ...,
        prompt: PromptSelector | Mapping[str, Any] | None = ...,
        cache: bool | None = ...,
        provider: str | None = ...,
        stream: Literal[False] = ...,
        **ranking: Unpack[RankingOptions],
    ) -> AnswerResponse: ...

    @overload
    def answer(
        self,
        query: str,
        *,
        filters: Mapping[str, Any] | None = ...,
        mode: Mode | None = ...,
        top_k: int | None = ...,
        group: Group | None = ...,
        prompt: PromptSelector | Mapping[str, Any] | None = ...,
        cache: bool | None = ...,
        provider: str | None = ...,
        stream: Literal[True],
        **ranking: Unpack[RankingOptions],
    ) -> AnswerStream: ...

    def answer(
        self,
        query: str,
        *,
        filters: Mapping[str, Any] | None = None,
        mode: Mode | None = None,
        top_k: int | None = None,
        group: Group | None = None,
        prompt: PromptSelector | Mapping[str, Any] | None = None,
        cache: bool | None = None,
        provider: str | None = None,
        stream: bool = False,
        **ranking: Unpack[RankingOptions],
    ) -> AnswerResponse | AnswerStream:
        """POST /answer. `stream=True`: the events (`AnswerDelta`, `AnswerReset`, then
        `AnswerResponse` or `AnswerStreamError`); errors known before the first event
        (401, 422, 503 ...) raise here, as for a JSON answer."""
        search = common.search_body(query, filters, mode, top_k, group, ranking)
        body = common.answer_body(search, prompt, cache, provider, stream)
        if not stream:
            return self._model(AnswerResponse, "POST", "/answer", json=body)
        request = self._http.build_request("POST", "/answer", json=body)
        request.headers["Accept"] = "text/event-stream"
        return AnswerStream(self._with_retries(self._open, request))

    def document(self, doc_id: str) -> DocumentInfo:
        """GET /documents/{doc_id}: the indexed version (NotFound if none readable)."""
        return self._model(DocumentInfo, "GET", common.document_path(doc_id))

    def wait_for_version(self, doc_id: str, version: int, timeout: float = 30.0) -> DocumentInfo:
        """Block until `version` (or newer) of `doc_id` is searchable; TimedOut otherwise.

        Long-polls the server (it answers the moment the version is indexed), re-asking
        when the server's own wait cap ends first.
        """
        deadline = time.monotonic() + timeout
        path = common.document_path(doc_id)
        while True:
            left = max(0.0, deadline - time.monotonic())
            params = {"min_version": version, "wait": round(left, 3)}
            request = self._http.build_request(
                "GET", path, params=params, timeout=left + self.timeout
            )
            try:
                response = self._with_retries(self._send, request)
            except TimedOut as exc:  # servers before the 202 answered 504
                pending = exc
            else:
                if response.status_code != 202:  # 202: the server's wait ended first
                    return DocumentInfo.model_validate(response.json())
                pending = not_indexed_in_time(response)
            left = deadline - time.monotonic()
            if left <= 0:
                raise pending
            time.sleep(min(common.POLL_INTERVAL_S, left))

    def providers(self) -> list[ProviderInfo]:
        """GET /providers: the answer chain in order, with each circuit's state."""
        return _PROVIDERS.validate_python(self._json("GET", "/providers"))

    def prompts(self) -> list[PromptInfo]:
        """GET /prompts: the prompt templates and their release labels."""
        return _PROMPTS.validate_python(self._json("GET", "/prompts"))

    # --- plumbing ----------------------------------------------------------------------

    def _model(self, model: type[M], method: str, path: str, **kw: Any) -> M:
        return model.model_validate(self._json(method, path, **kw))

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        request = self._http.build_request(method, path, **kw)
        return self._with_retries(self._send, request).json()

    def _with_retries(self, call: Callable[[httpx.Request], T], request: httpx.Request) -> T:
        return Retrying(**self._retry)(call, request)

    def _send(self, request: httpx.Request) -> httpx.Response:
        response = self._http.send(request)
        if response.is_error:
            raise error_from(response)
        return response

    def _open(self, request: httpx.Request) -> httpx.Response:
        """The response with its body unread (a stream); an error reply is read and raised."""
        response = self._http.send(request, stream=True)
        if response.is_error:
            try:
                response.read()
            finally:
                response.close()
            raise error_from(response)
        return response
