"""Local HTTP servers speaking the OpenAI chat-completions and Anthropic Messages protocols.

Real HTTP on loopback, scripted per request: `script` is a list of actions consumed in
order, then `default` repeats. Actions: ("ok", text), ("sleep", seconds, text),
("status", code), ("raw", bytes). Every request is recorded with its headers and body.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


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
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server_self._lock:
                    server_self.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    action = (
                        server_self.script.pop(0) if server_self.script else server_self.default
                    )
                server_self._respond(self, action, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

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

    def _respond(self, handler: BaseHTTPRequestHandler, action: tuple, request: dict) -> None:
        kind = action[0]
        if kind == "sleep":
            time.sleep(action[1])
            action = ("ok", action[2])
            kind = "ok"
        if kind == "status":
            payload, code = json.dumps({"error": {"message": "scripted"}}).encode(), action[1]
        elif kind == "raw":
            payload, code = action[1], 200
        else:
            payload, code = json.dumps(self._body(action[1], request)).encode(), 200
        try:
            handler.send_response(code)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def _body(self, text: str, request: dict) -> dict:
        model = request.get("model", "scripted")
        if self.protocol == "openai":
            return {
                "id": "c1",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
        return {
            "id": "m1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
        }


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
