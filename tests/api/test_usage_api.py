"""Usage accounting and limits over real HTTP (uvicorn) with a real index, against a local
OpenAI-protocol server that counts what it served: every provider call is in GET /usage
under the key that caused it, and a spent budget is a 429 before any provider call."""

import json
import time

import httpx
import pytest

from api.app import create_app
from api.auth import key_id
from freshrag.runtime import ServerThread
from tests.conftest import free_port, make_indexer, make_services, make_settings, upsert
from tests.llm_servers import ScriptedLLM

pytestmark = pytest.mark.model

ANSWER = "Send it SIGTERM [1]."
RUNBOOK = (
    "# Worker runbook\n\n## Stopping\n\nTo stop the ingest worker cleanly, send it SIGTERM. "
    "It finishes the batch in hand, commits offsets and leaves the consumer group."
)
QUESTION = "How do I stop the ingest worker cleanly?"
KEYS = {
    "key-alice": {"tenant": "acme", "groups": ["eng"], "name": "alice"},
    "key-bob": {
        "tenant": "acme",
        "groups": ["eng"],
        "name": "bob",
        "limits": {"tokens_per_day": 1},
    },
    "key-carol": {
        "tenant": "acme",
        "groups": ["eng"],
        "name": "carol",
        "limits": {"requests_per_second": 0.01},
    },
    "key-gus": {"tenant": "globex", "groups": ["eng"], "name": "gus"},
    "key-admin": {"tenant": "ops", "groups": [], "name": "root", "admin": True},
}
PRICES = {"gpt-x": {"input": 2.0, "output": 8.0}}


@pytest.fixture
def usage_api(tmp_path, edge_index, dense, sparse):
    """start() → (api, llm); a second start() is a restart on the same data_dir."""
    llm = ScriptedLLM("openai", default=("ok", ANSWER)).start()
    apis = []
    primary = {"kind": "openai", "base_url": llm.base_url, "model": "gpt-x", "retries": 0}
    settings = make_settings(
        tmp_path, llm_chain=[primary], api_keys=KEYS, prices=PRICES, answer_require_names=False
    )
    make_indexer(edge_index, dense, sparse).apply(
        [
            upsert("runbook", RUNBOOK, 1, tenant="acme", acl=["eng"]),
            upsert("runbook", RUNBOOK, 1, tenant="globex", acl=["eng"]),
        ]
    )

    def start():
        if apis:
            apis[-1].stop()
        services = make_services(settings, edge_index, dense, sparse)
        api = ServerThread(create_app(services), "127.0.0.1", free_port()).start()
        apis.append(api)
        return api, llm

    yield start
    apis[-1].stop()
    llm.stop()


def served_tokens(llm, first: int) -> int:
    """What the test server billed for its requests from index `first` on."""
    return sum(
        ScriptedLLM._input_tokens(r["body"]) + len(ANSWER.split()) for r in llm.requests[first:]
    )


def ask(http, key, stream=False, **body):
    body = {"query": QUESTION, "cache": False, "stream": stream, **body}
    r = http.post("/answer", json=body, headers={"Authorization": f"Bearer {key}"})
    return r


def usage(http, key="key-admin", **params):
    return http.get("/usage", params=params, headers={"X-API-Key": key})


def by_key(report):
    return {k["key_name"]: k for k in report["keys"]}


def test_every_provider_call_is_accounted_to_its_key_and_survives_a_restart(usage_api):
    api, llm = usage_api()
    expected: dict[str, int] = {}
    calls: dict[str, int] = {}
    with httpx.Client(base_url=api.url, timeout=30) as http:
        for key, name, stream in [
            ("key-alice", "alice", False),
            ("key-alice", "alice", True),
            ("key-gus", "gus", False),
            ("key-alice", "alice", False),
        ]:
            first = len(llm.requests)
            r = ask(http, key, stream=stream)
            assert r.status_code == 200, r.text
            assert "usage" not in r.text or stream  # JSON answers keep their shape
            expected[name] = expected.get(name, 0) + served_tokens(llm, first)
            calls[name] = calls.get(name, 0) + len(llm.requests) - first
        assert calls == {"alice": 3, "gus": 1}

        report = usage(http).json()
        keys = by_key(report)
        for name, tokens in expected.items():
            row = keys[name]
            assert row["input_tokens"] + row["output_tokens"] == tokens
            assert row["calls"] == calls[name] and row["estimated_calls"] == 0
        assert keys["alice"]["key_id"] == key_id("key-alice")
        assert "key-alice" not in json.dumps(report)  # never the key itself
        assert report["total"]["calls"] == len(llm.requests) == 4
        tenants = {t["tenant"]: t for t in report["tenants"]}
        assert tenants["acme"]["calls"] == 3 and tenants["globex"]["calls"] == 1
        [model] = report["models"]
        assert (model["provider"], model["model"]) == ("openai", "gpt-x")
        total = report["total"]
        assert total["cost_usd"] == pytest.approx(
            (total["input_tokens"] * 2.0 + total["output_tokens"] * 8.0) / 1e6
        )

    api, _ = usage_api()  # a restart: the ledger is on disk
    with httpx.Client(base_url=api.url, timeout=30) as http:
        assert usage(http).json()["total"] == report["total"]


def test_a_key_sees_only_its_own_usage_unless_it_is_an_admin(usage_api):
    api, _ = usage_api()
    with httpx.Client(base_url=api.url, timeout=30) as http:
        ask(http, "key-alice")
        ask(http, "key-gus")
        everything = usage(http).json()
        assert everything["scope"] == "all" and everything["total"]["calls"] == 2
        own = usage(http, "key-alice").json()
        assert own["scope"] == "key"
        assert own["total"]["calls"] == 1
        assert [k["key_name"] for k in own["keys"]] == ["alice"]
        assert [t["tenant"] for t in own["tenants"]] == ["acme"]
        assert "gus" not in json.dumps(own) and "globex" not in json.dumps(own)
        r = usage(http, "key-alice", scope="all")
        assert r.status_code == 403 and "admin" in r.text
        mine = usage(http, scope="key").json()  # an admin asking for its own calls
        assert mine["scope"] == "key" and mine["total"]["calls"] == 0


def test_usage_needs_a_key_and_its_window_is_validated(usage_api):
    api, _ = usage_api()
    with httpx.Client(base_url=api.url, timeout=30) as http:
        assert usage(http, "nope").status_code == 401
        assert usage(http, scope="everyone").status_code == 422
        r = usage(http, since="yesterday")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"]
        r = usage(http, until="2026-13-01")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "until"]
        ask(http, "key-alice")
        # A window whose start is not before its end is empty, not an error.
        r = usage(http, since="2030-12-02T00:00:00Z", until="2026-12-01T00:00:00+00:00")
        assert r.status_code == 200 and r.json()["total"]["calls"] == 0
        empty = usage(http, since="2020-01-01T00:00:00Z", until="2020-01-02T00:00:00Z").json()
        assert empty["total"]["calls"] == 0 and empty["keys"] == []
        assert empty["since"] == "2020-01-01T00:00:00.000000Z"
        assert usage(http).json()["total"]["calls"] == 1


def test_a_spent_token_budget_is_a_429_before_any_provider_call(usage_api):
    api, llm = usage_api()
    with httpx.Client(base_url=api.url, timeout=30) as http:
        assert ask(http, "key-bob").status_code == 200  # within budget when it started
        served = len(llm.requests)
        r = ask(http, "key-bob", stream=True)
        assert r.status_code == 429
        assert r.json()["limit"] == "tokens_per_day" and "API key 'bob'" in r.json()["detail"]
        assert 0 < int(r.headers["retry-after"]) <= 86400
        assert len(llm.requests) == served  # the provider was never asked
        assert ask(http, "key-alice").status_code == 200  # other keys are unaffected
        assert usage(http).json()["total"]["calls"] == served + 1

    api, _ = usage_api()  # the day's spending is reloaded after a restart
    with httpx.Client(base_url=api.url, timeout=30) as http:
        assert ask(http, "key-bob").status_code == 429
        assert len(llm.requests) == served + 1


def test_requests_per_second_is_a_429_with_retry_after(usage_api):
    api, llm = usage_api()
    with httpx.Client(base_url=api.url, timeout=30) as http:
        assert ask(http, "key-carol").status_code == 200
        r = ask(http, "key-carol")
        assert r.status_code == 429 and r.json()["limit"] == "requests_per_second"
        assert int(r.headers["retry-after"]) >= 90
        assert len(llm.requests) == 1


def test_a_cache_hit_records_the_tokens_it_saved(usage_api):
    api, llm = usage_api()
    with httpx.Client(base_url=api.url, timeout=30) as http:
        assert ask(http, "key-alice", cache=True).json()["cached"] is False
        billed = served_tokens(llm, 0)
        assert ask(http, "key-alice", cache=True).json()["cached"] is True
        streamed = ask(http, "key-alice", stream=True, cache=True)
        assert '"cached":true' in streamed.text.replace(" ", "")
        alice = by_key(usage(http).json())["alice"]
        assert alice["calls"] == len(llm.requests) == 1
        assert alice["cache_hits"] == 2 and alice["saved_tokens"] == 2 * billed
        # Priced at gpt-x's rates: what the two hits would have cost as calls.
        first = llm.requests[0]["body"]
        n_in, n_out = ScriptedLLM._input_tokens(first), len(ANSWER.split())
        assert alice["saved_usd"] == pytest.approx(2 * (n_in * 2.0 + n_out * 8.0) / 1e6)


def test_a_stream_the_client_left_is_still_accounted_as_estimated(usage_api):
    api, llm = usage_api()
    llm.script = [("stream", ["Send it ", "SIGTERM ", "[1]."], [0.0, 5.0, 5.0])]
    with httpx.Client(base_url=api.url, timeout=30) as http:
        body = {"query": QUESTION, "cache": False, "stream": True}
        with http.stream(
            "POST", "/answer", json=body, headers={"Authorization": "Bearer key-alice"}
        ) as r:
            for line in r.iter_lines():
                if line.startswith("event: delta"):
                    break  # leave mid-answer
        deadline = time.monotonic() + 10
        while True:
            report = usage(http).json()
            if report["total"]["calls"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        alice = by_key(report)["alice"]
        assert alice["calls"] == len(llm.requests) == 1
        assert alice["estimated_calls"] == 1  # the usage chunk never came: counted by us
        assert alice["input_tokens"] > 0 and alice["output_tokens"] >= 2
        [prompt] = report["prompts"]
        assert prompt["prompt"] == "grounded-answer@1" and prompt["calls"] == 1
