"""The two ways an MCP client reaches the server: stdio (the client starts `freshrag mcp`
as its child, one key for the process) and streamable HTTP (a long-running server, each
request with its own key)."""

from __future__ import annotations

from starlette.types import ASGIApp

from freshrag.mcp.api import Api
from freshrag.mcp.keys import KeyGate, fixed_key, request_key
from freshrag.mcp.server import build_server

HTTP_PATH = "/mcp"


def run_stdio(url: str, key: str) -> None:
    """Serve one MCP client on stdin/stdout until it closes them; every call uses `key`."""
    build_server(Api(url), fixed_key(key)).run("stdio")


def http_app(
    url: str,
    *,
    path: str = HTTP_PATH,
    host: str = "127.0.0.1",
    allowed_hosts: list[str] | None = None,
) -> ASGIApp:
    """The streamable HTTP endpoint at `path`, behind the key gate.

    Bound to a loopback `host`, the SDK checks Host and Origin (DNS rebinding); bound to
    anything else, `allowed_hosts` (`name:port`, `name:*`) turns that check on for
    those names. The key gate applies either way.
    """
    from mcp.server.transport_security import TransportSecuritySettings

    api = Api(url)
    security = None
    if allowed_hosts:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=list(allowed_hosts),
            allowed_origins=[
                f"{scheme}://{h}" for h in allowed_hosts for scheme in ("http", "https")
            ],
        )
    server = build_server(api, request_key)
    app = server.streamable_http_app(
        streamable_http_path=path, host=host, transport_security=security
    )
    return KeyGate(app, api)
