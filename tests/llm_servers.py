"""Local HTTP servers speaking the OpenAI chat-completions and Anthropic Messages protocols.

Real HTTP on loopback, scripted per request: `script` is a list of actions consumed in
order, then `default` repeats. A request with `"stream": true` gets its answer as the
protocol's Server-Sent Events (OpenAI: `chat.completion.chunk`s, then a usage chunk when
`stream_options.include_usage`, then `[DONE]`; Anthropic: `message_start`,
`content_block_start`, `ping`, `content_block_delta`s, `content_block_stop`,
`message_delta` with the usage, `message_stop`), any other request one JSON body with a
`usage` field. Token counts are words: the request's for input, the answer's for output.

Actions:
  ("ok", text)                the answer; streamed word by word when asked to stream
  ("sleep", seconds, text)    wait, then as ("ok", text)
  ("status", code)            that status with a JSON error body
  ("raw", bytes)              these bytes as a JSON body (malformed answers)
  ("stream", chunks, gaps)    streamed whatever the request asked: these text chunks, each
                              after its gap in seconds (`gaps` a number for all, or a list)
  ("drop", chunks)            streamed: these chunks, then the connection is cut mid-body
  ("fail", chunks)            streamed: these chunks, then the protocol's error event

Every request is recorded with its path, headers (lower-case names) and body; a streamed
one also with `time.monotonic()` instants: `first_chunk_at` (its first text went out),
`done_at` (it ended as scripted) or `closed_at` (the client closed the connection first).
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def words(text: str) -> list[str]:
    """An answer cut as the scripted servers stream it: word by word, spaces kept."""
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]]


class ClientGone(Exception):
    """The client closed the connection while its answer was streaming."""


class ScriptedLLM:
    def __init__(self, protocol: str, default: tuple = ("ok", "Nothing to say [1].")) -> None:
        assert protocol in ("openai", "anthropic")
        self.protocol = protocol
        self.script: list[tuple] = []
        self.default = default
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 for chunked streams (a cut one is then an error, not an early end);
            # every response closes its connection, so no handler waits on an idle one.
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                record = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
                with server_self._lock:
                    server_self.requests.append(record)
                    action = (
                        server_self.script.pop(0) if server_self.script else server_self.default
                    )
                server_self._respond(self, action, record)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll: `stop()` waits for the serving loop's next poll (0.5 s by default,
        # paid by every test that stops a server).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}" + ("/v1" if self.protocol == "openai" else "")

    def start(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- responses ------------------------------------------------------------------

    def _respond(self, handler: BaseHTTPRequestHandler, action: tuple, record: dict) -> None:
        request = record["body"]
        kind = action[0]
        if kind == "sleep":
            time.sleep(action[1])
            kind, action = "ok", ("ok", action[2])
        try:
            if kind == "status":
                body = json.dumps({"error": {"type": "api_error", "message": "scripted"}})
                self._send(handler, action[1], body.encode())
            elif kind == "raw":
                self._send(handler, 200, action[1])
            elif kind == "ok" and not request.get("stream"):
                self._send(handler, 200, json.dumps(self._body(action[1], request)).encode())
            else:
                chunks = words(action[1]) if kind == "ok" else list(action[1])
                gaps = action[2] if kind == "stream" else 0.0
                self._stream(handler, record, chunks, gaps, end=kind)
        except (BrokenPipeError, ConnectionResetError, ClientGone):
            record.setdefault("closed_at", time.monotonic())  # the client left

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, payload: bytes) -> None:
        handler.send_response(code)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        handler.send_header("connection", "close")
        handler.end_headers()
        handler.wfile.write(payload)

    def _stream(
        self,
        handler: BaseHTTPRequestHandler,
        record: dict,
        chunks: list[str],
        gaps: float | list[float],
        end: str,
    ) -> None:
        request = record["body"]
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("cache-control", "no-cache")
        handler.send_header("transfer-encoding", "chunked")
        handler.send_header("connection", "close")
        handler.end_headers()
        conn = handler.connection

        def write(*events: bytes) -> None:
            data = b"".join(events)
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()

        write(*self._opening(request))
        for i, text in enumerate(chunks):
            _wait(conn, gaps[i] if isinstance(gaps, list) else gaps)
            write(self._delta(text, request))
            record.setdefault("first_chunk_at", time.monotonic())
        if end == "drop":
            conn.shutdown(socket.SHUT_RDWR)  # no terminating chunk: the body is cut
            record["done_at"] = time.monotonic()
            return
        if end == "fail":
            write(self._error_event())
        else:
            write(*self._closing(request, len(chunks)))
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
        record["done_at"] = time.monotonic()

    # --- the two protocols ------------------------------------------------------------

    @staticmethod
    def _input_tokens(request: dict) -> int:
        texts = [str(request.get("system", ""))]
        texts += [str(m.get("content", "")) for m in request.get("messages", [])]
        return sum(len(t.split()) for t in texts)

    def _body(self, text: str, request: dict) -> dict:
        model = request.get("model", "scripted")
        n_in, n_out = self._input_tokens(request), len(text.split())
        if self.protocol == "openai":
            return {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": n_in,
                    "completion_tokens": n_out,
                    "total_tokens": n_in + n_out,
                },
            }
        return {
            "id": "m1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": n_in, "output_tokens": n_out},
        }

    def _chunk(self, request: dict, delta: dict, finish: str | None = None) -> bytes:
        return _data(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": request.get("model", "scripted"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def _opening(self, request: dict) -> list[bytes]:
        if self.protocol == "openai":
            return [self._chunk(request, {"role": "assistant", "content": ""})]
        message = {
            "id": "m1",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "scripted"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens(request), "output_tokens": 1},
        }
        return [
            _event("message_start", {"type": "message_start", "message": message}),
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            _event("ping", {"type": "ping"}),
        ]

    def _delta(self, text: str, request: dict) -> bytes:
        if self.protocol == "openai":
            return self._chunk(request, {"content": text})
        return _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
        )

    def _closing(self, request: dict, n_out: int) -> list[bytes]:
        n_in = self._input_tokens(request)
        if self.protocol == "openai":
            events = [self._chunk(request, {}, finish="stop")]
            if (request.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "prompt_tokens": n_in,
                    "completion_tokens": n_out,
                    "total_tokens": n_in + n_out,
                }
                events.append(
                    _data(
                        {
                            "id": "c1",
                            "object": "chat.completion.chunk",
                            "created": 0,
                            "model": request.get("model", "scripted"),
                            "choices": [],
                            "usage": usage,
                        }
                    )
                )
            return [*events, b"data: [DONE]\n\n"]
        return [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": n_out},
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]

    def _error_event(self) -> bytes:
        error = {"type": "overloaded_error", "message": "Overloaded"}
        if self.protocol == "openai":
            return _data({"error": error})
        return _event("error", {"type": "error", "error": error})


def _data(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _event(name: str, payload: dict) -> bytes:
    return f"event: {name}\n".encode() + _data(payload)


def _wait(conn: socket.socket, seconds: float) -> None:
    """Sleeps `seconds`, but raises `ClientGone` as soon as the client closes the connection."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([conn], [], [], left)
        if readable:
            try:
                peeked = conn.recv(1, socket.MSG_PEEK)
            except OSError as exc:
                raise ClientGone() from exc
            if not peeked:
                raise ClientGone()
            time.sleep(left)  # the client sent something: not ours to read


def fill_schema(schema: dict, defs: dict | None = None) -> Any:
    """A minimal valid instance of a JSON schema (what a cooperative judge would return)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return fill_schema(defs[schema["$ref"].split("/")[-1]], defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return fill_schema(next(s for s in schema[key] if s.get("type") != "null"), defs)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        return {k: fill_schema(v, defs) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [fill_schema(schema.get("items", {"type": "string"}), defs)]
    return {
        "string": "The answer is supported by the context.",
        "integer": 1,
        "number": 1.0,
        "boolean": True,
    }.get(kind, "x")


class JudgeLLM(ScriptedLLM):
    """An OpenAI-compatible judge that answers every structured request with a valid instance."""

    def __init__(self) -> None:
        super().__init__("openai")

    def _body(self, text: str, request: dict) -> dict:
        prompt = "\n".join(str(m.get("content", "")) for m in request.get("messages", []))
        start = prompt.find("{", prompt.find("json_schema"))
        schema, _ = json.JSONDecoder().raw_decode(prompt[start:])
        return super()._body(json.dumps(fill_schema(schema)), request)
