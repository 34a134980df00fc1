"""The usage ledger: every provider call (and every cache hit's savings) attributed to the
tenant, key and prompt that caused it, priced, counted in Prometheus and kept in SQLite.

The gateway reports each call through `Gateway.on_usage` without knowing who asked; the
answer route sets `ATTRIBUTION` first, and the call's context (copied into the lane's
thread and into the stream's task) carries it here. Rows are written by one writer
thread (SQLite in WAL mode: readers never wait for it), off the request's path; the
limiter's daily token counts are updated at once, so a spent budget bites immediately.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from freshrag.settings import ModelPrice
from retrieval.answer.providers import Usage

log = logging.getLogger("freshrag.usage")

CALLS = Counter(
    "freshrag_llm_calls_total",
    "Provider calls by outcome",
    ["tenant", "provider", "model", "outcome"],
)
TOKENS = Counter(
    "freshrag_llm_tokens_total",
    "Tokens billed by providers (direction: input/output; estimated: counted by us)",
    ["tenant", "provider", "model", "direction", "estimated"],
)
COST = Counter("freshrag_llm_cost_usd_total", "Priced cost of provider calls", ["tenant", "model"])
SAVED = Counter(
    "freshrag_cache_saved_tokens_total", "Tokens answer-cache hits did not spend", ["tenant"]
)


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who a provider call is for."""

    tenant: str
    key_id: str
    key_name: str
    prompt: str


ATTRIBUTION: ContextVar[Attribution | None] = ContextVar("freshrag_usage_for", default=None)
UNATTRIBUTED = Attribution("unknown", "", "unknown", "")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    at TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL, key_name TEXT NOT NULL,
    prompt TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, outcome TEXT NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, estimated INTEGER NOT NULL,
    latency_ms REAL NOT NULL, cost_usd REAL NOT NULL, priced INTEGER NOT NULL,
    cache_hit INTEGER NOT NULL, saved_tokens INTEGER NOT NULL,
    saved_usd REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_at ON usage (at);
"""
# Columns added since the first release, for ledgers written before them.
_ADDED = {"saved_usd": "REAL NOT NULL DEFAULT 0"}
_COLUMNS = (
    "at, tenant, key_id, key_name, prompt, provider, model, outcome, input_tokens, "
    "output_tokens, estimated, latency_ms, cost_usd, priced, cache_hit, saved_tokens, saved_usd"
)
_TOTALS = (
    "SUM(cache_hit = 0) AS calls, SUM(input_tokens) AS input_tokens, "
    "SUM(output_tokens) AS output_tokens, SUM(estimated) AS estimated_calls, "
    "SUM(cache_hit = 0 AND priced = 0 AND provider != 'extractive') AS unpriced_calls, "
    "ROUND(SUM(cost_usd), 8) AS cost_usd, SUM(cache_hit) AS cache_hits, "
    "SUM(saved_tokens) AS saved_tokens, ROUND(SUM(saved_usd), 8) AS saved_usd"
)
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "tenants": ("tenant",),
    "keys": ("tenant", "key_id", "key_name"),
    "providers": ("provider",),
    "models": ("provider", "model"),
    "prompts": ("prompt",),
}


def iso(at: datetime) -> str:
    """Timestamps stored as UTC ISO text: they sort and compare as strings."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class UsageLedger:
    def __init__(
        self,
        path: Path,
        prices: dict[str, ModelPrice],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path, self.prices, self.now = path, prices, now
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(usage)")}
            for column, kind in _ADDED.items():
                if column not in have:
                    db.execute(f"ALTER TABLE usage ADD COLUMN {column} {kind}")
        # Called with (key_id, tenant, tokens) for every call that billed tokens.
        self.listeners: list[Callable[[str, str, int], None]] = []
        self._queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write, name="usage-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    # --- recording ------------------------------------------------------------------

    def on_usage(self, usage: Usage) -> None:
        """The gateway's callback: one provider call, for whoever the context says asked."""
        who = ATTRIBUTION.get() or UNATTRIBUTED
        n_in, n_out = usage.input_tokens or 0, usage.output_tokens or 0
        price = self.prices.get(usage.model)
        cost = 0.0 if price is None else (n_in * price.input + n_out * price.output) / 1e6
        CALLS.labels(who.tenant, usage.provider, usage.model, usage.outcome).inc()
        est = str(usage.estimated).lower()
        TOKENS.labels(who.tenant, usage.provider, usage.model, "input", est).inc(n_in)
        TOKENS.labels(who.tenant, usage.provider, usage.model, "output", est).inc(n_out)
        COST.labels(who.tenant, usage.model).inc(cost)
        self._notify(who, n_in + n_out)
        self._queue.put(
            (iso(self.now()), who.tenant, who.key_id, who.key_name, who.prompt)
            + (usage.provider, usage.model, usage.outcome, n_in, n_out, int(usage.estimated))
            + (usage.latency_ms, cost, int(price is not None), 0, 0, 0.0)
        )

    def cache_hit(self, who: Attribution, tokens: dict[str, Any] | None, model: str = "") -> None:
        """An answer served from the cache: no call, and what its making cost saved (its
        tokens, priced at `model`'s rates when the price table has them)."""
        n_in = n_out = 0
        if isinstance(tokens, dict):
            n_in = _count(tokens.get("input_tokens"))
            n_out = _count(tokens.get("output_tokens"))
        price = self.prices.get(model)
        saved_usd = 0.0 if price is None else (n_in * price.input + n_out * price.output) / 1e6
        SAVED.labels(who.tenant).inc(n_in + n_out)
        self._queue.put(
            (iso(self.now()), who.tenant, who.key_id, who.key_name, who.prompt)
            + ("cache", "cache", "cache_hit", 0, 0, 0, 0.0, 0.0, 1, 1, n_in + n_out, saved_usd)
        )

    def _notify(self, who: Attribution, tokens: int) -> None:
        for listener in self.listeners:
            try:
                listener(who.key_id, who.tenant, tokens)
            except Exception:  # a broken listener must not fail the answer
                log.exception("usage listener failed")

    def _write(self) -> None:
        """The one writer: rows in batches of whatever has queued up."""
        db = self._connect()
        try:
            while True:
                row = self._queue.get()
                rows = [row]
                while not self._queue.empty():
                    rows.append(self._queue.get_nowait())
                batch = [r for r in rows if r is not None]
                try:
                    if batch:
                        with db:
                            db.executemany(
                                f"INSERT INTO usage ({_COLUMNS}) VALUES ({', '.join('?' * 17)})",
                                batch,
                            )
                except sqlite3.Error:
                    log.exception("could not write %d usage rows", len(batch))
                finally:
                    for _ in rows:
                        self._queue.task_done()
                if len(batch) < len(rows):
                    return
        finally:
            db.close()

    def flush(self) -> None:
        """Waits until every queued row is written (reads then see them)."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=10)

    # --- reading ----------------------------------------------------------------------

    def totals(self, since: datetime, until: datetime, key_id: str | None = None) -> dict[str, Any]:
        """Totals over [since, until) overall and per tenant, key, provider and model;
        only the calls of one key when `key_id` is given."""
        self.flush()
        window: tuple[str, ...] = (iso(since), iso(until))
        where = "WHERE at >= ? AND at < ?"
        if key_id is not None:
            where, window = where + " AND key_id = ?", (*window, key_id)
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            overall = db.execute(f"SELECT {_TOTALS} FROM usage {where}", window).fetchone()
            out: dict[str, Any] = {"total": _clean(dict(overall))}
            for name, cols in DIMENSIONS.items():
                group = ", ".join(cols)
                # Cache hits belong to tenants and keys; as providers they would be noise.
                only_calls = " AND cache_hit = 0" if name in ("providers", "models") else ""
                rows = db.execute(
                    f"SELECT {group}, {_TOTALS} FROM usage {where}{only_calls} "
                    f"GROUP BY {group} ORDER BY {group}",
                    window,
                ).fetchall()
                out[name] = [_clean(dict(r)) for r in rows]
        return out

    def tokens_on(self, day: datetime) -> list[tuple[str, str, int]]:
        """(key_id, tenant, tokens) billed on `day` (UTC): the limiter's counts after a restart."""
        self.flush()
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        with self._connect() as db:
            rows = db.execute(
                "SELECT key_id, tenant, SUM(input_tokens + output_tokens) FROM usage "
                "WHERE at >= ? AND at < ? AND cache_hit = 0 GROUP BY key_id, tenant",
                (iso(start), iso(start + timedelta(days=1))),
            ).fetchall()
        return [(k, t, int(n or 0)) for k, t, n in rows]


def _count(value: Any) -> int:
    """A token count from a cached answer's record: a non-negative int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """NULL sums (an empty window) as zeros."""
    return {k: (0 if v is None else v) for k, v in row.items()}


_OPEN: dict[Path, UsageLedger] = {}
_OPEN_LOCK = threading.Lock()


def open_ledger(path: Path, prices: dict[str, ModelPrice]) -> UsageLedger:
    """One ledger (one writer) per file in a process, however many service stacks share it."""
    key = path.resolve()
    with _OPEN_LOCK:
        ledger = _OPEN.get(key)
        if ledger is None:
            ledger = _OPEN[key] = UsageLedger(path, prices)
        return ledger
