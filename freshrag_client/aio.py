"""The asyncio client: `Client`'s methods, awaited, on one `httpx.AsyncClient`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Self, TypeVar, Unpack, overload

import httpx
from pydantic import BaseModel, TypeAdapter
from tenacity import AsyncRetrying

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
from freshrag_client.streams import AsyncAnswerStream

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
_PROVIDERS = TypeAdapter(list[ProviderInfo])
_PROMPTS = TypeAdapter(list[PromptInfo])


class AsyncClient:
    """FreshRAG over HTTP for asyncio. `async with`, or `await aclose()`.

    The same retries and errors as `Client`: a 503 with Retry-After is retried after the
    wait the server asks for (capped at `max_retry_wait`), `retries` times.
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self._retry = common.retry_policy(retries, max_retry_wait)
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            timeout=timeout,
            headers=common.headers(api_key, generation, headers),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- endpoints ---------------------------------------------------------------------

    async def retrieve(
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
        return await self._model(RetrieveResponse, "POST", "/retrieve", json=body)

    @overload
    async def answer(
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
    async def answer(
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
    ) -> AsyncAnswerStream: ...

    async def answer(
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
    ) -> AnswerResponse | AsyncAnswerStream:
        """POST /answer; `stream=True`: an `AsyncAnswerStream` of the events, opened here
        (errors known before the first event raise here)."""
        search = common.search_body(query, filters, mode, top_k, group, ranking)
        body = common.answer_body(search, prompt, cache, provider, stream)
        if not stream:
            return await self._model(AnswerResponse, "POST", "/answer", json=body)
        request = self._http.build_request("POST", "/answer", json=body)
        request.headers["Accept"] = "text/event-stream"
        return AsyncAnswerStream(await self._with_retries(self._open, request))

    async def document(self, doc_id: str) -> DocumentInfo:
        """GET /documents/{doc_id}: the indexed version (NotFound if none readable)."""
        return await self._model(DocumentInfo, "GET", common.document_path(doc_id))

    async def wait_for_version(
        self, doc_id: str, version: int, timeout: float = 30.0
    ) -> DocumentInfo:
        """Until `version` (or newer) of `doc_id` is searchable; TimedOut otherwise.

        Long-polls the server, re-asking when the server's own wait cap ends first.
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
                response = await self._with_retries(self._send, request)
            except TimedOut as exc:  # servers before the 202 answered 504
                pending = exc
            else:
                if response.status_code != 202:  # 202: the server's wait ended first
                    return DocumentInfo.model_validate(response.json())
                pending = not_indexed_in_time(response)
            left = deadline - time.monotonic()
            if left <= 0:
                raise pending
            await asyncio.sleep(min(common.POLL_INTERVAL_S, left))

    async def providers(self) -> list[ProviderInfo]:
        """GET /providers: the answer chain in order, with each circuit's state."""
        return _PROVIDERS.validate_python(await self._json("GET", "/providers"))

    async def prompts(self) -> list[PromptInfo]:
        """GET /prompts: the prompt templates and their release labels."""
        return _PROMPTS.validate_python(await self._json("GET", "/prompts"))

    # --- plumbing ----------------------------------------------------------------------

    async def _model(self, model: type[M], method: str, path: str, **kw: Any) -> M:
        return model.model_validate(await self._json(method, path, **kw))

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        request = self._http.build_request(method, path, **kw)
        return (await self._with_retries(self._send, request)).json()

    async def _with_retries(
        self, call: Callable[[httpx.Request], Awaitable[T]], request: httpx.Request
    ) -> T:
        return await AsyncRetrying(**self._retry)(call, request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self._http.send(request)
        if response.is_error:
            raise error_from(response)
        return response

    async def _open(self, request: httpx.Request) -> httpx.Response:
        """The response with its body unread (a stream); an error reply is read and raised."""
        response = await self._http.send(request, stream=True)
        if response.is_error:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise error_from(response)
        return response
