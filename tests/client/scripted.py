"""A local HTTP server that replies from a script, recording what it was asked.

Real HTTP on loopback (the client's own transport, timing and retries are what is
tested); each request takes the next reply, the last one repeats.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Reply = tuple[int, dict[str, str], bytes]


def reply(status: int, body: Any = None, **headers: str) -> Reply:
    """A JSON reply; header names with `_` for `-` (retry_after → Retry-After)."""
    named = {k.replace("_", "-").title(): v for k, v in headers.items()}
    return status, {"Content-Type": "application/json", **named}, json.dumps(body).encode()


def events(*items: tuple[str, Any]) -> Reply:
    """A text/event-stream reply, formatted as FastAPI formats /answer's events."""
    text = ": ping\n\n" + "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in items)
    return 200, {"Content-Type": "text/event-stream"}, text.encode()


class ScriptedHTTP:
    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": json.loads(body) if body else None,
                        "at": time.monotonic(),
                    }
                )
                status, headers, payload = (
                    outer.replies.pop(0) if len(outer.replies) > 1 else outer.replies[0]
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
