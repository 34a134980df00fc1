"""API keys → principals (tenant + groups, whether the key may run operator actions such
as a reindex, and whether it may publish documents). The body of a request never widens
them."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPBearer

from api.limits import Limiter, Limits, parse_limits
from retrieval.search import Principal


@dataclass(frozen=True, slots=True)
class KeyPrincipal(Principal):
    """A key's principal: the read path's Principal, plus the rights only the API checks."""

    publish: bool = False  # may send document events (POST/DELETE /documents)


def may_publish(who: Principal) -> bool:
    return isinstance(who, KeyPrincipal) and who.publish


def key_id(key: str) -> str:
    """Not the key: a prefix of its hash, safe to store and show to an admin."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyStore:
    def __init__(self, keys: dict[str, dict]) -> None:
        self._principals: dict[str, Principal] = {}
        self._ids: dict[str, str] = {}
        self.key_limits: dict[str, Limits] = {}  # by key id
        self.tenant_limits: dict[str, Limits] = {}
        if not isinstance(keys, dict):
            raise ValueError('the keys must be a JSON object {"<key>": {"tenant": ...}}')
        for key, spec in keys.items():
            if not isinstance(spec, dict) or not spec.get("tenant"):
                raise ValueError(f"API key entry {key[:4]}… needs a 'tenant'")
            groups = spec.get("groups", [])
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ValueError(f"API key entry {key[:4]}…: 'groups' must be a list of strings")
            admin = spec.get("admin", False)
            if not isinstance(admin, bool):
                raise ValueError(f"API key entry {key[:4]}…: 'admin' must be true or false")
            publish = spec.get("publish", False)
            if not isinstance(publish, bool):
                raise ValueError(f"API key entry {key[:4]}…: 'publish' must be true or false")
            name = spec.get("name", spec["tenant"])
            if not isinstance(name, str) or not name:
                raise ValueError(f"API key entry {key[:4]}…: 'name' must be a non-empty string")
            self._principals[key] = KeyPrincipal(
                name, spec["tenant"], tuple(groups), admin, publish
            )
            self._ids[key] = key_id(key)
            where = f"API key entry {key[:4]}… ({name})"
            limits = parse_limits(spec.get("limits"), f"{where}: 'limits'")
            if limits.any:
                self.key_limits[self._ids[key]] = limits
            shared = parse_limits(spec.get("tenant_limits"), f"{where}: 'tenant_limits'")
            if shared.any:
                known = self.tenant_limits.setdefault(spec["tenant"], shared)
                if known != shared:
                    raise ValueError(
                        f"{where}: 'tenant_limits' differ from another key's for tenant "
                        f"{spec['tenant']!r}; give them once, or the same on every key"
                    )

    def __len__(self) -> int:
        return len(self._principals)

    @classmethod
    def load(cls, inline: dict[str, dict] | None, path: Path) -> KeyStore:
        return cls(read_keys(inline, path))

    def key_id(self, key: str | None) -> str:
        """The key's stable id (a hash prefix): what usage and limits are kept under."""
        return self._ids.get(key or "", "")

    def limiter(self) -> Limiter:
        return Limiter(self.key_limits, self.tenant_limits)

    def principal(self, key: str | None) -> Principal | None:
        return self._principals.get(key) if key else None

    def authenticate(self, request: Request) -> Principal:
        """The principal for a request's `Authorization: Bearer` or `X-API-Key` header."""
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
        return self.resolve(bearer, request.headers.get("x-api-key"), auth)

    def resolve(self, bearer: str | None, api_key: str | None, authorization: str) -> Principal:
        """The principal for a key sent either way; 401 naming what is wrong if none."""
        key = api_key or bearer
        if not key:
            if authorization.strip():
                raise _unauthorized(
                    "Authorization header must be 'Bearer <key>' (or send the key as 'X-API-Key')"
                )
            raise _unauthorized(
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"
            )
        principal = self.principal(key)
        if principal is None:
            raise _unauthorized("unknown API key")
        return principal


# The two ways to send a key, as OpenAPI security schemes (api/deps.py reads both).
BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="The key alone.")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


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
        json.dumps(
            {
                key: {
                    "name": "dev",
                    "tenant": "default",
                    "groups": ["public"],
                    "admin": True,
                    "publish": True,
                }
            },
            indent=2,
        )
    )
    path.chmod(0o600)
    return key
