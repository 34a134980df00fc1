"""Rate limits and token budgets per API key and per tenant, from the keys file.

Checked before any provider call: a request over a limit gets a 429 naming the limit, with
`Retry-After`. Counts live in this process (docs/how-to/usage-and-limits.md: with several
replicas each counts its own); the day's tokens are reloaded from the usage ledger on start.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter

LIMITED = Counter(
    "freshrag_rate_limited_total", "Requests refused with a 429, by limit", ["scope", "limit"]
)

_FIELDS = ("requests_per_second", "tokens_per_day")


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's or a tenant's limits; None: unlimited."""

    requests_per_second: float | None = None
    tokens_per_day: int | None = None

    @property
    def any(self) -> bool:
        return self.requests_per_second is not None or self.tokens_per_day is not None


def parse_limits(spec: Any, where: str) -> Limits:
    """`spec` from the keys file, checked: a clear ValueError naming the field otherwise."""
    if spec is None:
        return Limits()
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: must be an object with {' and/or '.join(_FIELDS)}")
    unknown = sorted(set(spec) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {list(_FIELDS)}")
    rps = spec.get("requests_per_second")
    if rps is not None and (
        isinstance(rps, bool)
        or not isinstance(rps, int | float)
        or not math.isfinite(rps)
        or rps <= 0
    ):
        raise ValueError(f"{where}.requests_per_second must be a number > 0, got {rps!r}")
    tpd = spec.get("tokens_per_day")
    if tpd is not None and (isinstance(tpd, bool) or not isinstance(tpd, int) or tpd < 0):
        raise ValueError(f"{where}.tokens_per_day must be an integer >= 0, got {tpd!r}")
    return Limits(None if rps is None else float(rps), tpd)


class RateLimited(Exception):
    """Over a limit: the API answers 429 with `Retry-After: retry_after_s`."""

    def __init__(self, scope: str, limit: str, value: float, retry_after_s: int) -> None:
        self.scope, self.limit, self.retry_after_s = scope, limit, retry_after_s
        super().__init__(f"{scope} is over its limit {limit}={value:g}; retry in {retry_after_s} s")


class _Bucket:
    """A token bucket: `rate` requests a second, bursts of up to max(1, rate)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate, self.capacity = rate, max(1.0, rate)
        self.level, self.at = self.capacity, now

    def take(self, now: float) -> float:
        """0 if a request may go now, else the seconds until it may."""
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level >= 1:
            self.level -= 1
            return 0.0
        return (1 - self.level) / self.rate


def _day(at: datetime) -> str:
    return at.strftime("%Y-%m-%d")


class Limiter:
    """Per-key and per-tenant buckets and daily token totals (UTC days)."""

    def __init__(
        self,
        keys: dict[str, Limits],
        tenants: dict[str, Limits],
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.keys, self.tenants = keys, tenants
        self.clock, self.now = clock, now
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._tokens: dict[tuple[str, str, str], int] = {}  # (kind, id, day) → tokens
        self._lock = threading.Lock()

    @property
    def budgets(self) -> bool:
        """Whether any key or tenant has a daily token budget (else no need to count)."""
        return any(
            lim.tokens_per_day is not None for lim in (*self.keys.values(), *self.tenants.values())
        )

    def _scopes(
        self, key_id: str, key_name: str, tenant: str
    ) -> list[tuple[str, str, str, Limits]]:
        scopes = []
        if key_id in self.keys:
            scopes.append(("key", key_id, f"API key {key_name!r}", self.keys[key_id]))
        if tenant in self.tenants:
            scopes.append(("tenant", tenant, f"tenant {tenant!r}", self.tenants[tenant]))
        return scopes

    def admit(self, key_id: str, key_name: str, tenant: str) -> None:
        """One request: RateLimited when the key's or the tenant's rate is spent."""
        now = self.clock()
        with self._lock:
            for kind, ident, label, lim in self._scopes(key_id, key_name, tenant):
                if lim.requests_per_second is None:
                    continue
                bucket = self._buckets.get((kind, ident))
                if bucket is None:
                    bucket = self._buckets[(kind, ident)] = _Bucket(lim.requests_per_second, now)
                wait = bucket.take(now)
                if wait > 0:
                    LIMITED.labels(kind, "requests_per_second").inc()
                    raise RateLimited(
                        label, "requests_per_second", lim.requests_per_second, math.ceil(wait)
                    )

    def check_tokens(self, key_id: str, key_name: str, tenant: str) -> None:
        """Before a provider call: RateLimited when today's tokens reached a budget."""
        at = self.now()
        day = _day(at)
        midnight = datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)
        retry = max(1, math.ceil((midnight - at).total_seconds()))
        with self._lock:
            for kind, ident, label, lim in self._scopes(key_id, key_name, tenant):
                budget = lim.tokens_per_day
                if budget is not None and self._tokens.get((kind, ident, day), 0) >= budget:
                    LIMITED.labels(kind, "tokens_per_day").inc()
                    raise RateLimited(label, "tokens_per_day", budget, retry)

    def spent(self, key_id: str, tenant: str, tokens: int, at: datetime | None = None) -> None:
        """Tokens a provider call of this key billed (the ledger calls this for each)."""
        day = _day(at or self.now())
        with self._lock:
            for kind, ident in (("key", key_id), ("tenant", tenant)):
                slot = (kind, ident, day)
                self._tokens[slot] = self._tokens.get(slot, 0) + tokens

    def used_today(self, kind: str, ident: str) -> int:
        with self._lock:
            return self._tokens.get((kind, ident, _day(self.now())), 0)
