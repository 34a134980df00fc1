"""Request bodies: a size limit, and JSON parsed strictly before any endpoint sees it.

Python's json module accepts `NaN`, `Infinity` and `1e400` (→ inf) and lone surrogates
(`"\\ud800"`); none of them can be searched for, and FastAPI's own 422 for them fails to
serialise. Here they become a 422 naming the field, and a body over the limit a 413,
whether or not it declares a Content-Length.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem
from retrieval.filters import printable

_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_ERRORS = 20


class BodyLimit:
    """ASGI middleware: bodies over `max_bytes` get a 413 before anything reads them.

    `overrides` gives some endpoints, by (method, path), a limit of their own (POST
    /documents carries whole documents).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, overrides: dict[tuple[str, str], int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get((scope["method"], scope["path"]), self.max_bytes)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        # No (or a small) Content-Length: count what actually arrives (chunked bodies).
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # disconnected while sending
                await self.app(scope, _replay([message], receive), send)
                return
            size += len(message.get("body", b""))
            if size > limit:
                await self._too_large(scope, receive, send, limit)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem(413, f"request body is larger than {limit} bytes")
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()

    return replayed


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class StrictJSONRequest(Request):
    """A request whose `.json()` is the strictly checked parse (FastAPI reuses it)."""

    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            self._strict_json = strict_loads(await self.body())
        return self._strict_json


def strict_loads(body: bytes) -> Any:
    """Parse JSON; RequestValidationError for non-finite numbers and lone surrogates."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise _invalid(["body", exc.pos], f"invalid JSON: {exc.msg}", "json_invalid") from exc
    except UnicodeDecodeError as exc:
        raise _invalid(["body"], "the body is not valid UTF-8", "json_invalid") from exc
    except RecursionError as exc:
        raise _invalid(["body"], "JSON is nested too deeply", "json_invalid") from exc
    except ValueError as exc:  # an integer literal longer than Python will convert
        raise _invalid(
            ["body"], "invalid JSON: a number literal is too long", "json_invalid"
        ) from exc
    errors = list(_unsearchable(value))
    if errors:
        raise RequestValidationError(errors[:_MAX_ERRORS])
    return value


def _invalid(loc: list[str | int], msg: str, type_: str) -> RequestValidationError:
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": type_}])


def _unsearchable(value: Any):  # noqa: ANN202
    """Errors for every non-finite number and lone surrogate, with where it is."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ("body",))]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            yield {
                "loc": loc,
                "msg": "numbers must be finite: NaN, Infinity and literals beyond the "
                "64-bit float range are not accepted",
                "type": "finite_number",
            }
        elif isinstance(item, str) and _SURROGATE.search(item):
            yield _surrogate(loc)
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    yield _surrogate((*loc, printable(key)))
                stack.append((child, (*loc, key)))
        elif isinstance(item, list):
            stack.extend((child, (*loc, i)) for i, child in enumerate(item))


def _surrogate(loc: tuple[str | int, ...]) -> dict[str, Any]:
    return {
        "loc": loc,
        "msg": "text must be valid Unicode: lone surrogates (e.g. \\ud800) are not accepted",
        "type": "string_unicode",
    }


class StrictJSONRoute(APIRoute):
    """Routes whose JSON bodies go through `strict_loads` before validation."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            if self.body_field is None or not _is_json(request.headers.get("content-type")):
                return await handler(request)
            request = StrictJSONRequest(request.scope, request.receive)
            if await request.body():
                await request.json()
            return await handler(request)

        return strict
