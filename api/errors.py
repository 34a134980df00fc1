"""Error bodies: one shape per kind, documented in OpenAPI, and never a 500 while rendering.

- 422: FastAPI's list shape `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`,
  for pydantic's checks and ours (filters, prompts, strict JSON) alike.
- 429: `{"detail", "limit", "scope"}`, with Retry-After.
- Everything else (400/401/404/405/413/503/504): `{"detail": "what went wrong"}`; a 405
  with `Allow` naming every method the path serves.

Replies are rendered ASCII-only with lone surrogates escaped, and the caller's input is
never echoed back, so an odd request cannot make its own error unserialisable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.lanes import LaneFull
from api.limits import RateLimited
from retrieval.filters import printable


class Problem(BaseModel):
    """Any error other than a validation error."""

    detail: str


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """A 422: which part of the request is wrong (`loc`) and why (`msg`)."""

    detail: list[ErrorItem]


class SafeJSONResponse(JSONResponse):
    """JSON that always renders: ASCII only, no NaN."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, default=str).encode()


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": printable(detail)}, status, headers=headers)


def invalid(
    loc: Sequence[str | int], msg: str, type_: str = "value_error"
) -> RequestValidationError:
    """Our own checks as a RequestValidationError, so they get the same 422 body."""
    return RequestValidationError([{"loc": tuple(loc), "msg": msg, "type": type_}])


def _item(error: dict[str, Any]) -> dict[str, Any]:
    loc = [
        p if isinstance(p, int) and not isinstance(p, bool) else printable(str(p))
        for p in error.get("loc", ())
    ]
    return {
        "loc": loc,
        "msg": printable(str(error.get("msg", "invalid value"))),
        "type": printable(str(error.get("type", "value_error"))),
    }


async def _validation(_: Request, exc: RequestValidationError) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": [_item(e) for e in exc.errors()]}, 422)


async def _http(request: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
    detail = exc.detail if isinstance(exc.detail, dict | list) else printable(str(exc.detail))
    headers = exc.headers
    if exc.status_code == 405:
        served = allowed_methods(request)
        if served:
            headers = {**(headers or {}), "Allow": served}
    return SafeJSONResponse({"detail": detail}, exc.status_code, headers=headers)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")


def allowed_methods(request: Request) -> str:
    """The `Allow` of a 405: every method some route serves at this path. Starlette names
    only the first matching route's, and GET and DELETE /documents/{doc_id} are two. Asked
    of the routes themselves (`matches`), so included routers answer for theirs."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    )


async def _rate_limited(_: Request, exc: RateLimited) -> SafeJSONResponse:
    body = {"detail": printable(str(exc)), "limit": exc.limit, "scope": printable(exc.scope)}
    return SafeJSONResponse(body, 429, headers={"Retry-After": str(exc.retry_after_s)})


async def _lane_full(_: Request, exc: LaneFull) -> SafeJSONResponse:
    return problem(503, str(exc), {"Retry-After": str(exc.retry_after_s)})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(LaneFull, _lane_full)
    app.add_exception_handler(RateLimited, _rate_limited)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses an endpoint can return."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = ValidationProblem if status == 422 else Problem
        out[status] = {"model": model, "description": _DESCRIPTIONS[status]}
        if status in (429, 503):
            out[status]["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            }
    return out


_DESCRIPTIONS = {
    400: "The request cannot be read.",
    401: "Missing, malformed or unknown API key.",
    403: "This key may not do this (operator actions need an admin key).",
    404: "Not indexed, or not readable with this key.",
    409: "Not possible in the current state (the detail says why).",
    413: "Request body larger than FRESHRAG_MAX_REQUEST_BYTES.",
    422: "Invalid request; `loc` names the field.",
    429: "Over a rate limit or token budget of the key or its tenant (`limit` names it); "
    "retry after Retry-After seconds.",
    503: "Busy (retry after Retry-After seconds) or not configured.",
    504: "The answer deadline ran out before any provider served.",
}
