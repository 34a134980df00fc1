"""Whose key a call carries to the API.

stdio serves one client, the process that started it: every call uses the key the
server was started with. Streamable HTTP serves anyone who reaches the port: every HTTP
request must carry its own key (`Authorization: Bearer <key>`, or `X-API-Key` as on the
API), which `KeyGate` has the API check before the MCP server sees the request, and
each call then forwards that request's key. There is no default key on HTTP, so one
server can serve several tenants, each seeing what its key may read on the API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context
from starlette.authentication import AuthCredentials
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from freshrag.mcp.api import Api, ApiUnreachable
from freshrag_client import FreshRAGError, RateLimited, Unauthorized

log = logging.getLogger("freshrag.mcp")

# A key the API accepted is not asked about again for this long. Only the gate's own
# check is skipped: every tool call and read still sends the key to the API, which
# decides anew what it may read.
ACCEPTED_FOR_S = 30.0
_MAX_REMEMBERED = 4096


def key_id(key: str) -> str:
    """Not the key: a prefix of its hash (the API shows keys the same way), which binds an
    MCP session to the key that opened it."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class NoKey(Exception):
    """A call reached a handler without a key (HTTP: the gate was bypassed)."""


def fixed_key(key: str) -> Callable[[Context], str]:
    """stdio: every call uses the key the server was started with."""

    def key_of(_ctx: Context) -> str:
        return key

    return key_of


def request_key(ctx: Context) -> str:
    """Streamable HTTP: the key of the HTTP request that carried this call, as the gate
    accepted it. Never a default: without one the call fails."""
    request = ctx.request_context.request
    user = getattr(request, "scope", {}).get("user")
    if not isinstance(user, AuthenticatedUser):
        raise NoKey("this request carries no API key: send 'Authorization: Bearer <key>'")
    return user.access_token.token


def presented_key(headers: Headers) -> tuple[str | None, str]:
    """(key, why not) from `X-API-Key` or `Authorization: Bearer`, as the API reads them."""
    api_key = headers.get("x-api-key", "").strip()
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    if api_key or bearer:
        return api_key or bearer, ""
    if authorization.strip():
        return None, "Authorization header must be 'Bearer <key>' (or send the key as 'X-API-Key')"
    return None, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"


class KeyGate:
    """ASGI middleware in front of the MCP endpoint: a request without a key the API
    accepts is answered 401 (with the API's reason), before any MCP message is read;
    503 when the API cannot be asked. An accepted request goes on with its key as the
    authenticated user (`scope["user"]`), which the SDK binds a session to: a session
    opened with one key cannot be used with another.
    """

    def __init__(self, app: ASGIApp, api: Api) -> None:
        self.app = AuthContextMiddleware(app)  # also the SDK's get_access_token()
        self.api = api
        self._accepted: dict[str, float] = {}  # key hash -> monotonic time accepted until

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key, why = presented_key(Headers(scope=scope))
        if key is None:
            await _refuse(send, 401, why)
            return
        try:
            await self._check(key)
        except (Unauthorized, RateLimited) as exc:  # the API's answer for this key
            await _refuse(send, exc.status, exc.detail, exc.retry_after)
            return
        except (FreshRAGError, ApiUnreachable) as exc:
            log.warning("cannot check an MCP caller's key: %s", exc)
            await _refuse(send, 503, f"the key cannot be checked now: {exc}", 5.0)
            return
        user = AuthenticatedUser(AccessToken(token=key, client_id=key_id(key), scopes=[]))
        await self.app({**scope, "user": user, "auth": AuthCredentials([])}, receive, send)

    async def _check(self, key: str) -> None:
        """The API's word on the key: GET /providers needs any valid key and reads nothing
        of a tenant's documents."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = time.monotonic()
        if self._accepted.get(digest, 0.0) > now:
            return
        async with self.api.call(key) as client:
            await client.providers()
        if len(self._accepted) >= _MAX_REMEMBERED:
            self._accepted = {d: t for d, t in self._accepted.items() if t > now}
            if len(self._accepted) >= _MAX_REMEMBERED:
                self._accepted.clear()
        self._accepted[digest] = now + ACCEPTED_FOR_S


async def _refuse(send: Send, status: int, detail: str, retry_after: float | None = None) -> None:
    """An OAuth-style bearer error (RFC 6750), as the SDK's own auth answers, carrying the
    API's message; MCP clients show the description."""
    error = {401: "invalid_token", 429: "rate_limited"}.get(status, "temporarily_unavailable")
    body = json.dumps({"error": error, "error_description": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        quoted = detail.replace("\\", "\\\\").replace('"', '\\"')
        challenge = f'Bearer error="invalid_token", error_description="{quoted}"'
        headers.append((b"www-authenticate", challenge.encode("latin-1", "replace")))
    if retry_after is not None:
        headers.append((b"retry-after", b"%d" % max(1, round(retry_after))))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
