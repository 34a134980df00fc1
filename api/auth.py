"""API keys → principals (tenant + groups). The body of a request never widens them."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from fastapi import HTTPException, Request

from retrieval.search import Principal


class KeyStore:
    def __init__(self, keys: dict[str, dict]) -> None:
        self._principals: dict[str, Principal] = {}
        for key, spec in keys.items():
            if not isinstance(spec, dict) or not spec.get("tenant"):
                raise ValueError(f"API key entry {key[:4]}… needs a 'tenant'")
            groups = spec.get("groups", [])
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ValueError(f"API key entry {key[:4]}…: 'groups' must be a list of strings")
            self._principals[key] = Principal(
                spec.get("name", spec["tenant"]), spec["tenant"], tuple(groups)
            )

    def __len__(self) -> int:
        return len(self._principals)

    @classmethod
    def load(cls, inline: dict[str, dict] | None, path: Path) -> KeyStore:
        return cls(read_keys(inline, path))

    def principal(self, key: str | None) -> Principal | None:
        return self._principals.get(key) if key else None

    def authenticate(self, request: Request) -> Principal:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key:
            raise HTTPException(
                401,
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = self.principal(key)
        if principal is None:
            raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        return principal


def read_keys(inline: dict[str, dict] | None, path: Path) -> dict[str, dict]:
    """The key map: inline settings win over the keys file."""
    if inline:
        return inline
    if not path.exists():
        raise FileNotFoundError(
            f"no API keys: set FRESHRAG_API_KEYS or create {path} "
            '({"<key>": {"tenant": "default", "groups": ["public"]}})'
        )
    return json.loads(path.read_text())


def key_for_tenant(keys: dict[str, dict], tenant: str = "default") -> str | None:
    return next((k for k, spec in keys.items() if spec.get("tenant") == tenant), None)


def ensure_dev_keys(path: Path) -> str:
    """First `freshrag up`: write a keys file with one random dev key; return a usable key."""
    if path.exists():
        keys = read_keys(None, path)
        return key_for_tenant(keys) or next(iter(keys))
    key = "frk_" + secrets.token_urlsafe(18)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({key: {"name": "dev", "tenant": "default", "groups": ["public"]}}, indent=2)
    )
    path.chmod(0o600)
    return key
