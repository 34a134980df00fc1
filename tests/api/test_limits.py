"""Keys-file limits, checked at load, and the limiter's arithmetic; the usage ledger's
store (SQLite, survives a reopen). No broker, no model."""

from datetime import UTC, datetime, timedelta

import pytest

from api.auth import KeyStore, key_id
from api.limits import Limiter, Limits, RateLimited, parse_limits
from api.usage import Attribution, UsageLedger
from freshrag.settings import ModelPrice, Settings
from retrieval.answer.providers import Usage

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"limits": {"tokens_per_day": -1}}, "'limits'.tokens_per_day must be an integer >= 0"),
        ({"limits": {"tokens_per_day": "lots"}}, "tokens_per_day must be an integer"),
        ({"limits": {"tokens_per_day": 1.5}}, "tokens_per_day must be an integer"),
        ({"limits": {"requests_per_second": 0}}, "requests_per_second must be a number > 0"),
        ({"limits": {"requests_per_second": -2}}, "requests_per_second must be a number > 0"),
        ({"limits": {"requests_per_second": True}}, "requests_per_second must be a number"),
        ({"limits": {"rps": 3}}, "unknown field(s) ['rps']"),
        ({"limits": [1, 2]}, "'limits': must be an object"),
        ({"tenant_limits": {"tokens_per_day": -5}}, "'tenant_limits'.tokens_per_day"),
        ({"name": 7}, "'name' must be a non-empty string"),
    ],
)
def test_a_bad_limit_in_the_keys_file_stops_the_start_naming_the_field(spec, fragment):
    with pytest.raises(ValueError) as err:
        KeyStore({"secret-key-1": {"tenant": "acme", **spec}})
    assert fragment in str(err.value)
    assert "secret-key-1" not in str(err.value)  # the key itself is never echoed whole


def test_tenant_limits_must_agree_across_its_keys():
    keys = {
        "k-1": {"tenant": "acme", "tenant_limits": {"tokens_per_day": 10}},
        "k-2": {"tenant": "acme", "tenant_limits": {"tokens_per_day": 20}},
    }
    with pytest.raises(ValueError, match="differ from another key's"):
        KeyStore(keys)
    keys["k-2"]["tenant_limits"] = {"tokens_per_day": 10}
    store = KeyStore(keys)
    assert store.tenant_limits == {"acme": Limits(None, 10)}


def test_limits_are_kept_by_key_id_not_by_key():
    store = KeyStore({"secret-key": {"tenant": "acme", "limits": {"requests_per_second": 2}}})
    assert store.key_limits == {key_id("secret-key"): Limits(2.0, None)}
    assert "secret-key" not in repr(store.key_limits)
    assert parse_limits(None, "x") == Limits()


def test_requests_per_second_is_a_token_bucket_per_key_and_per_tenant():
    now = [0.0]
    limiter = Limiter(
        {"k1": Limits(requests_per_second=2)},
        {"acme": Limits(requests_per_second=3)},
        clock=lambda: now[0],
    )
    limiter.admit("k1", "alice", "acme")
    limiter.admit("k1", "alice", "acme")
    with pytest.raises(RateLimited) as err:
        limiter.admit("k1", "alice", "acme")
    assert err.value.limit == "requests_per_second" and err.value.retry_after_s == 1
    assert "API key 'alice'" in str(err.value)
    # Another key of the tenant: its own bucket is fine, the tenant's has one left.
    limiter.admit("k2", "bob", "acme")
    with pytest.raises(RateLimited) as err:
        limiter.admit("k2", "bob", "acme")
    assert err.value.scope == "tenant 'acme'"
    now[0] = 1.0  # a second later both buckets refilled
    limiter.admit("k1", "alice", "acme")
    limiter.admit("other", "carol", "globex")  # no limits at all


def test_tokens_per_day_refuse_once_spent_until_the_next_utc_day():
    day = [datetime(2026, 12, 7, 23, 0, tzinfo=UTC)]
    limiter = Limiter({"k1": Limits(tokens_per_day=100)}, {}, now=lambda: day[0])
    limiter.check_tokens("k1", "alice", "acme")
    limiter.spent("k1", "acme", 99)
    limiter.check_tokens("k1", "alice", "acme")
    limiter.spent("k1", "acme", 1)
    with pytest.raises(RateLimited) as err:
        limiter.check_tokens("k1", "alice", "acme")
    assert err.value.limit == "tokens_per_day" and err.value.retry_after_s == 3600
    day[0] += timedelta(hours=1)
    limiter.check_tokens("k1", "alice", "acme")


def call(model: str, n_in: int | None, n_out: int | None, **kw) -> Usage:
    return Usage("primary", model, n_in, n_out, 12.5, kw.pop("outcome", "ok"), **kw)


def test_the_ledger_prices_groups_and_survives_a_reopen(tmp_path):
    at = [datetime(2026, 12, 7, 10, 0, tzinfo=UTC)]
    prices = {"gpt-x": ModelPrice(input=1.0, output=2.0)}
    ledger = UsageLedger(tmp_path / "usage.sqlite3", prices, now=lambda: at[0])
    alice = Attribution("acme", "id-a", "alice", "answer@v1")
    bob = Attribution("globex", "id-b", "bob", "answer@v1")
    spent = []
    ledger.listeners.append(lambda *a: spent.append(a))

    from api.usage import ATTRIBUTION

    token = ATTRIBUTION.set(alice)
    ledger.on_usage(call("gpt-x", 1000, 500))
    ledger.on_usage(call("gpt-x", 10, 0, estimated=True))
    ATTRIBUTION.reset(token)
    token = ATTRIBUTION.set(bob)
    ledger.on_usage(call("other", 7, 3))
    ATTRIBUTION.reset(token)
    ledger.cache_hit(alice, {"input_tokens": 1000, "output_tokens": 500}, "gpt-x")
    ledger.cache_hit(bob, {"input_tokens": "9", "output_tokens": -4}, "other")  # untrusted
    at[0] = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
    ledger.on_usage(call("gpt-x", 1, 1))  # unattributed, the next day
    ledger.close()

    reopened = UsageLedger(tmp_path / "usage.sqlite3", prices)
    day = reopened.totals(datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC))
    assert day["total"]["calls"] == 3 and day["total"]["input_tokens"] == 1017
    assert day["total"]["cost_usd"] == pytest.approx((1010 * 1.0 + 500 * 2.0) / 1e6)
    assert day["total"]["unpriced_calls"] == 1 and day["total"]["estimated_calls"] == 1
    tenants = {t["tenant"]: t for t in day["tenants"]}
    assert tenants["acme"]["calls"] == 2 and tenants["acme"]["cache_hits"] == 1
    assert tenants["acme"]["saved_tokens"] == 1500
    assert tenants["acme"]["saved_usd"] == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert tenants["globex"]["saved_tokens"] == 0 and tenants["globex"]["saved_usd"] == 0
    only_bob = reopened.totals(
        datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC), key_id="id-b"
    )
    assert only_bob["total"]["calls"] == 1 and [t["tenant"] for t in only_bob["tenants"]] == [
        "globex"
    ]
    assert [(k["key_name"], k["key_id"]) for k in day["keys"]] == [
        ("alice", "id-a"),
        ("bob", "id-b"),
    ]
    assert {(m["provider"], m["model"]) for m in day["models"]} == {
        ("primary", "gpt-x"),
        ("primary", "other"),
    }
    assert spent[:3] == [("id-a", "acme", 1500), ("id-a", "acme", 10), ("id-b", "globex", 10)]
    assert spent[3:] == [("", "unknown", 2)]  # unattributed calls are still counted
    assert sorted(reopened.tokens_on(datetime(2026, 12, 7, 18, tzinfo=UTC))) == [
        ("id-a", "acme", 1510),
        ("id-b", "globex", 10),
    ]
    assert reopened.totals(at[0], at[0] + timedelta(hours=1))["total"]["calls"] == 1
    reopened.close()


def test_a_ledger_from_before_priced_savings_is_upgraded_in_place(tmp_path):
    """A ledger written before `saved_usd` existed opens, keeps its rows, and takes new ones."""
    import sqlite3

    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(
            """CREATE TABLE usage (
                at TEXT NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
                key_name TEXT NOT NULL, prompt TEXT NOT NULL, provider TEXT NOT NULL,
                model TEXT NOT NULL, outcome TEXT NOT NULL, input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL, estimated INTEGER NOT NULL,
                latency_ms REAL NOT NULL, cost_usd REAL NOT NULL, priced INTEGER NOT NULL,
                cache_hit INTEGER NOT NULL, saved_tokens INTEGER NOT NULL);"""
        )
        db.execute(
            "INSERT INTO usage VALUES ('2026-12-07T10:00:00.000000Z', 'acme', 'id-a', 'alice',"
            " 'answer@v1', 'primary', 'gpt-x', 'ok', 10, 5, 0, 1.0, 0.00002, 1, 0, 0)"
        )
    at = [datetime(2026, 12, 7, 11, 0, tzinfo=UTC)]
    ledger = UsageLedger(path, {"gpt-x": ModelPrice(input=1.0, output=2.0)}, now=lambda: at[0])
    ledger.cache_hit(
        Attribution("acme", "id-a", "alice", "answer@v1"), {"input_tokens": 10}, "gpt-x"
    )
    day = ledger.totals(datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC))
    ledger.close()
    assert day["total"]["calls"] == 1 and day["total"]["cache_hits"] == 1
    assert day["total"]["saved_usd"] == pytest.approx(10 * 1.0 / 1e6)


def test_prices_come_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("FRESHRAG_PRICES", '{"gpt-x": {"input": 0.15, "output": 0.6}}')
    assert Settings().prices == {"gpt-x": ModelPrice(input=0.15, output=0.6)}
    monkeypatch.setenv("FRESHRAG_PRICES", '{"gpt-x": {"input": -1, "output": 0.6}}')
    with pytest.raises(ValueError, match="prices"):
        Settings()
