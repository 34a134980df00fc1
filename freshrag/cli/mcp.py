"""`freshrag mcp`: the MCP server for agents, over the running API (freshrag/mcp/)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from freshrag.cli._base import cli
from freshrag.settings import Settings

KEY_ENV = "FRESHRAG_API_KEY"


@cli.command("mcp")
@click.option(
    "--transport",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio: an MCP client starts this command and talks over stdin/stdout, every call "
    f"with one key ({KEY_ENV} or --api-key-file). http: streamable HTTP at --path, every "
    "request with its own 'Authorization: Bearer <key>'.",
)
@click.option(
    "--url", default=None, help="The FreshRAG API. Default: http://FRESHRAG_HOST:FRESHRAG_PORT."
)
@click.option(
    "--api-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help=f"stdio: a file holding the API key (instead of {KEY_ENV}; keeps it out of the "
    "client's config).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="http: address to listen on.")
@click.option("--port", type=int, default=8001, show_default=True, help="http: port to listen on.")
@click.option("--path", default="/mcp", show_default=True, help="http: the MCP endpoint's path.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="http, bound to a non-loopback address: a Host (name:port, or name:*) clients use; "
    "requests naming any other Host or Origin are refused (DNS rebinding). Repeatable.",
)
def mcp(
    transport: str,
    url: str | None,
    api_key_file: Path | None,
    host: str,
    port: int,
    path: str,
    allowed_hosts: tuple[str, ...],
) -> None:
    """Serve search, answers and documents to agents over the Model Context Protocol.

    Tools `search` (what /retrieve returns) and `answer` (what /answer returns), and the
    resource freshrag://documents/{doc_id} (what GET /documents/{doc_id} returns). Each is
    one request to the API with the caller's key, so a key reads exactly what it reads over
    HTTP. Needs the API running and the mcp extra (pip install 'freshrag[mcp]').
    """
    settings = Settings()
    url = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    try:
        from freshrag.mcp import transports
    except ModuleNotFoundError as exc:
        if exc.name != "mcp" and not (exc.name or "").startswith("mcp."):
            raise
        raise click.ClickException(
            "the MCP server needs the MCP SDK: pip install 'freshrag[mcp]'"
        ) from exc
    if transport == "stdio":
        if allowed_hosts:
            raise click.UsageError("--allowed-host is for --transport http")
        transports.run_stdio(url, _stdio_key(api_key_file))
        return
    if api_key_file is not None or os.environ.get(KEY_ENV):
        # Not an error for the variable (a shell may export it for other commands), but
        # never a default key: say that it is not used.
        if api_key_file is not None:
            raise click.UsageError(
                "--api-key-file is for stdio: over HTTP every request sends its own key"
            )
        click.echo(
            f"note: {KEY_ENV} is ignored over HTTP: each request sends its own key", err=True
        )
    import uvicorn

    app = transports.http_app(url, path=path, host=host, allowed_hosts=list(allowed_hosts))
    click.echo(f"MCP (streamable HTTP) on http://{host}:{port}{path}, API {url}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _stdio_key(api_key_file: Path | None) -> str:
    """The one key a stdio server uses: from the file, or the environment."""
    if api_key_file is not None:
        key = api_key_file.read_text(encoding="utf-8").strip()
        if not key:
            raise click.UsageError(f"{api_key_file} holds no API key")
        return key
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise click.UsageError(
            f"no API key: set {KEY_ENV} or pass --api-key-file (over stdio every call uses it)"
        )
    return key
