"""The OpenAPI document as the server means it.

FastAPI writes an optional query or header parameter as `anyOf: [<type>, {"type": "null"}]`.
On the wire a parameter is text or absent: there is no null to send, and a client (or a
fuzzer) that sends the text `null` for it is refused. Here such a parameter is its type
alone, not required, which is exactly what the server takes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_NULL = {"type": "null"}


def install(app: FastAPI) -> None:
    """Serve `app`'s document with parameters that never take JSON null."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = without_null_parameters(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def without_null_parameters(doc: dict[str, Any]) -> dict[str, Any]:
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    parameter["schema"] = _non_null(parameter["schema"])
    return doc


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    branches = schema.get("anyOf")
    if not isinstance(branches, list) or _NULL not in branches:
        return schema
    kept = [b for b in branches if b != _NULL]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if rest.get("default", 0) is None:
        del rest["default"]  # absent is the default
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}
