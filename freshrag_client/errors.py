"""Error replies as exceptions that carry what the server said.

The service answers every error with `{"detail": ...}` (a string, or for a 422 a list of
`{"loc", "msg", "type"}`), so the exception's message is the server's own words and
callers can branch on the class or on `status`.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class FreshRAGError(Exception):
    """A FreshRAG error reply: `status`, the server's `detail` and the parsed `body`."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        body: Any = None,
        retry_after: float | None = None,
        request: str = "",
    ) -> None:
        self.status = status
        self.detail = detail
        self.body = body
        self.retry_after = retry_after
        self.request = request
        where = f" ({request})" if request else ""
        super().__init__(f"{status}{where}: {detail}")


class BadRequest(FreshRAGError):
    """400 or 413: the request cannot be read (or is too large)."""


class Unauthorized(FreshRAGError):
    """401: missing, malformed or unknown API key."""


class Forbidden(FreshRAGError):
    """403: this key may not do this (admin endpoints)."""


class NotFound(FreshRAGError):
    """404: not indexed, deleted, or not readable with this key (the same reply)."""


class Conflict(FreshRAGError):
    """409: not possible in the service's current state."""


class ValidationFailed(FreshRAGError):
    """422: `errors` lists each `{"loc", "msg", "type"}` the server reported."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        detail = self.body.get("detail") if isinstance(self.body, dict) else None
        return detail if isinstance(detail, list) else []


class RateLimited(FreshRAGError):
    """429: a rate limit or token budget of the key or its tenant (`limit`, `scope`).

    Not retried: a spent daily budget may mean hours, which the caller should decide on.
    """

    @property
    def limit(self) -> str | None:
        return self.body.get("limit") if isinstance(self.body, dict) else None

    @property
    def scope(self) -> str | None:
        return self.body.get("scope") if isinstance(self.body, dict) else None


class Unavailable(FreshRAGError):
    """503: busy (with `retry_after`: retried by the client) or not configured (without)."""


class TimedOut(FreshRAGError, TimeoutError):
    """504: the answer deadline ran out. Also what `wait_for_version` raises when its
    timeout passed before the version was indexed: then `status` is the server's 202 (the
    wait is not an error on the wire) and `body` says what is indexed instead."""


_CLASSES: dict[int, type[FreshRAGError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
    504: TimedOut,
}


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _detail(body: Any, fallback: str) -> str:
    """The server's message: a 422's items become `loc: msg` parts joined by '; '."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg")))
        return "; ".join(parts) or fallback
    if detail is not None:
        return json.dumps(detail)
    return fallback


def error_from(response: httpx.Response) -> FreshRAGError:
    """The exception for an error reply (its body must have been read)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    fallback = (body if isinstance(body, str) else "") or response.reason_phrase
    status = response.status_code
    cls = _CLASSES.get(status, FreshRAGError)
    request = f"{response.request.method} {response.request.url.path}"
    return cls(
        status,
        _detail(body, fallback or f"HTTP {status}"),
        body=body,
        retry_after=retry_after(response.headers.get("retry-after")),
        request=request,
    )


def not_indexed_in_time(response: httpx.Response) -> TimedOut:
    """The 202 of a long-poll on GET /documents that ended before the version was indexed,
    as the exception `wait_for_version` raises once its own timeout has passed too."""
    said = error_from(response)
    return TimedOut(said.status, said.detail, body=said.body, request=said.request)


def is_busy(exc: BaseException) -> bool:
    """A 503 that says when to come back: the service's lanes are full for now. A 503
    without Retry-After (e.g. answers not configured) will not change by retrying."""
    return isinstance(exc, Unavailable) and exc.retry_after is not None
