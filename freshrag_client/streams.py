"""A streamed answer: the server's Server-Sent Events as typed events.

The wire format is FastAPI's: `event: <name>` and `data: <json>` lines, a blank line
ending each event, `:` comment lines as keep-alives. Event names are /answer's contract
(`delta`, `reset`, `done`, `error`); one this client does not know is skipped, so a newer
server can add events without breaking older clients.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import Self

import httpx

from freshrag_client.models import EVENT_MODELS, AnswerEvent


class SSEDecoder:
    """Lines in, (event, data) out: the part of the SSE grammar the service uses."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:  # the end of an event
            event, data = self._event or "message", self._data
            self._event, self._data = "", []
            return (event, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None


def parse_event(name: str, data: str) -> AnswerEvent | None:
    """The typed event, None for an event name this client does not know."""
    model = EVENT_MODELS.get(name)
    return model.model_validate_json(data) if model is not None else None


class AnswerStream:
    """The events of one streamed answer, read as they arrive.

    Use it in a `with` block (or read it to the end): closing it early closes the
    connection, which cancels the provider call on the server.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._events = self._read()

    def _read(self) -> Generator[AnswerEvent, None, None]:
        decoder = SSEDecoder()
        try:
            for line in self.response.iter_lines():
                raw = decoder.feed(line)
                event = parse_event(*raw) if raw else None
                if event is not None:
                    yield event
        finally:
            self.response.close()

    def __iter__(self) -> Iterator[AnswerEvent]:
        return self._events

    def __next__(self) -> AnswerEvent:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
        self.response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAnswerStream:
    """`AnswerStream` for the async client: `async for` / `async with`."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._events = self._read()

    async def _read(self) -> AsyncGenerator[AnswerEvent, None]:
        decoder = SSEDecoder()
        try:
            async for line in self.response.aiter_lines():
                raw = decoder.feed(line)
                event = parse_event(*raw) if raw else None
                if event is not None:
                    yield event
        finally:
            await self.response.aclose()

    def __aiter__(self) -> AsyncIterator[AnswerEvent]:
        return self._events

    async def __anext__(self) -> AnswerEvent:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()
        await self.response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
