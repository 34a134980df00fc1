"""Streamed answers: how soon the client sees the provider's first token, and how soon a
client that hangs up stops the provider.

A local OpenAI-compatible server (the tests' scripted one, speaking the real protocol)
streams a cited answer at a fixed token rate; FreshRAG serves `/answer` over HTTP in this
process, over Django pages indexed in-line. Both clocks are this process's
`time.monotonic()`, so the gaps need no clock sync. Figures:

- `first_token_gap_ms`: the client's first `delta` event minus the instant the provider
  sent its first token (the target: within 50 ms);
- `streamed_first_token_ms` against `buffered_answer_ms`: when a client sees text with
  `"stream": true`, against when the same answer arrives as one JSON body (as before);
- `disconnect_gap_ms`: the provider's connection closed minus the client's hang-up after
  its first token (the target: the provider call ends within 1 s);
- `accounting`: per key, the provider calls and tokens `GET /usage` reports against what
  the provider's server counted (the target: equal, 100 %);
- `budget`: a key with a daily token budget answers until the budget is spent, then gets
  a 429 that the provider never sees (the target: 0 provider calls after the 429).

    .venv/bin/python -m bench.answer_stream [--requests 20] [--tokens 40] [--token-s 0.02]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import httpx

from api.app import create_app
from api.auth import KeyStore
from bench.harness import RESULTS, free_port, loadavg, pct, sample_pages, scratch_dir, write
from freshrag.runtime import Core, ServerThread
from freshrag.settings import ProviderSpec, Settings
from tests.llm_servers import ScriptedLLM

KEY = "bench"
KEYS = {
    KEY: {"tenant": "default", "groups": ["public"], "name": "bench"},
    "bench-budget": {
        "tenant": "default",
        "groups": ["public"],
        "name": "budget",
        "limits": {"tokens_per_day": 2000},
    },
    "bench-admin": {"tenant": "default", "groups": ["public"], "name": "admin", "admin": True},
}
QUESTION = "How do I install Django?"


def answer_text(tokens: int) -> list[str]:
    """`tokens` word chunks of a cited answer (the citation checks pass on source [1])."""
    words = [f"word{i} " for i in range(tokens - 2)]
    return ["Django runs under Gunicorn ", *words, "[1]."]


def stream_once(client: httpx.Client, url: str, n: int, hang_up: bool) -> dict:
    """One streamed /answer: instants of the request, the first delta, the end (or the
    hang-up right after the first delta)."""
    body = {"query": f"{QUESTION} ({n})", "stream": True, "cache": False}
    sent = time.monotonic()
    first = None
    with client.stream("POST", f"{url}/answer", json=body) as r:
        r.raise_for_status()
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "delta" and first is None:
                first = time.monotonic()
                if hang_up:
                    break  # leaving the block closes the connection
            elif line.startswith("data:") and event == "done":
                done = json.loads(line.split(":", 1)[1])
                if done.get("provider") != "openai":
                    raise SystemExit(f"answered by {done.get('provider')!r}, not the LLM: {done}")
    return {"sent": sent, "first": first, "ended": time.monotonic()}


def spend_budget(url: str, llm: ScriptedLLM, text: str) -> dict:
    """Answers for the budget key until its 429: how many, and whether the provider saw
    a call after the budget was spent."""
    llm.script = [("ok", text)] * 100
    llm.requests.clear()
    answered, tokens, refused = 0, 0, None
    with httpx.Client(headers={"Authorization": "Bearer bench-budget"}, timeout=60) as c:
        for n in range(100):
            before = len(llm.requests)
            r = c.post(f"{url}/answer", json={"query": f"{QUESTION} (k{n})", "cache": False})
            if r.status_code == 429:
                refused = {
                    "status": 429,
                    "retry_after": r.headers.get("retry-after"),
                    "limit": r.json().get("limit"),
                    "provider_calls_after_429": len(llm.requests) - before,
                }
                break
            r.raise_for_status()
            answered += 1
    for req in llm.requests:  # what the provider's server billed: its usage fields
        tokens += llm._input_tokens(req["body"]) + len(text.split())
    return {
        "tokens_per_day": KEYS["bench-budget"]["limits"]["tokens_per_day"],
        "answered_before_429": answered,
        "refused": refused,
        "provider_calls": len(llm.requests),
        "tokens": tokens,
    }


def account(client: httpx.Client, url: str, calls: dict[str, int], budget_tokens: int) -> dict:
    """`GET /usage` per key against the provider server's own counts."""
    r = client.get(f"{url}/usage", headers={"Authorization": "Bearer bench-admin"})
    r.raise_for_status()
    rows = {row["key_name"]: row for row in r.json()["keys"]}
    out = {}
    for name, served in calls.items():
        row = rows.get(name, {})
        out[name] = {
            "provider_calls_served": served,
            "provider_calls_recorded": row.get("calls", 0),
            "estimated_calls": row.get("estimated_calls", 0),
        }
    row = rows.get("budget", {})
    out["budget"]["tokens_billed_by_provider"] = budget_tokens
    out["budget"]["tokens_recorded"] = row.get("input_tokens", 0) + row.get("output_tokens", 0)
    out["calls_accounted_pct"] = round(
        100
        * sum(v["provider_calls_recorded"] for v in out.values() if isinstance(v, dict))
        / max(1, sum(calls.values())),
        1,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=20, help="streamed and buffered each")
    ap.add_argument("--tokens", type=int, default=40, help="tokens in the provider's answer")
    ap.add_argument("--token-s", type=float, default=0.02, help="seconds between tokens")
    ap.add_argument("--docs", type=int, default=40, help="Django pages indexed")
    ap.add_argument("--out", type=Path, default=RESULTS / "answer_stream.json")
    args = ap.parse_args()

    chunks = answer_text(args.tokens)
    llm = ScriptedLLM("openai", default=("stream", chunks, args.token_s)).start()
    tmp = scratch_dir("freshrag-bench-")
    settings = Settings(
        data_dir=tmp,
        api_keys=KEYS,
        llm_chain=[ProviderSpec(kind="openai", base_url=llm.base_url, model="bench-llm")],
    )
    core = Core.open(settings)
    _, events, _ = sample_pages(settings.sample_django_version, args.docs)
    indexer = core.indexer()
    for i in range(0, len(events), 32):
        indexer.apply(events[i : i + 32])
    indexer.processor.close()
    server = ServerThread(
        create_app(core.services(KeyStore(settings.api_keys))), "127.0.0.1", free_port()
    ).start()
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with httpx.Client(headers=headers, timeout=60) as client:
            stream_once(client, server.url, -1, hang_up=False)  # warm up: model, lanes
            llm.requests.clear()
            streamed = [stream_once(client, server.url, n, False) for n in range(args.requests)]
            served = list(llm.requests)
            # The same answer as one JSON body, after the time its tokens take to make.
            full = ("sleep", args.tokens * args.token_s, "".join(chunks))
            llm.script = [full] * args.requests
            buffered = []
            for n in range(args.requests):
                t = time.monotonic()
                body = {"query": f"{QUESTION} (b{n})", "cache": False}
                client.post(f"{server.url}/answer", json=body).raise_for_status()
                buffered.append((time.monotonic() - t) * 1000)
            llm.requests.clear()
            gone = [stream_once(client, server.url, 1000 + n, True) for n in range(args.requests)]
            time.sleep(args.tokens * args.token_s + 1)  # every scripted stream has ended
            cut = list(llm.requests)
            calls = {"bench": 1 + len(served) + args.requests + len(cut)}  # 1: the warm-up
            budget = spend_budget(server.url, llm, "".join(chunks))
            calls["budget"] = budget.pop("provider_calls")
            accounting = account(client, server.url, calls, budget.pop("tokens"))
    finally:
        server.stop()
        llm.stop()
    gaps = [
        (s["first"] - r["first_chunk_at"]) * 1000 for s, r in zip(streamed, served, strict=True)
    ]
    ttft = [(s["first"] - s["sent"]) * 1000 for s in streamed]
    provider_first = [
        (r["first_chunk_at"] - s["sent"]) * 1000 for s, r in zip(streamed, served, strict=True)
    ]
    closes = [
        (r.get("closed_at", r.get("done_at", float("inf"))) - g["ended"]) * 1000
        for g, r in zip(gone, cut, strict=True)
    ]
    result = {
        "benchmark": "answer_stream",
        "requests": args.requests,
        "provider_tokens": args.tokens,
        "provider_token_s": args.token_s,
        "provider_answer_s": round(args.tokens * args.token_s, 2),
        "first_token_gap_ms": {
            "p50": round(pct(gaps, 50), 1),
            "p99": round(pct(gaps, 99), 1),
            "max": round(max(gaps), 1),
        },
        "provider_first_token_ms_p50": round(pct(provider_first, 50), 1),
        "streamed_first_token_ms": {"p50": round(pct(ttft, 50), 1), "p99": round(pct(ttft, 99), 1)},
        "buffered_answer_ms": {
            "p50": round(pct(buffered, 50), 1),
            "p99": round(pct(buffered, 99), 1),
        },
        "first_token_vs_buffered_p50": round(pct(buffered, 50) / pct(ttft, 50), 1),
        "disconnect_gap_ms": {
            "p50": round(pct(closes, 50), 1),
            "max": round(max(closes), 1),
            "closed_before_the_end": sum("closed_at" in r for r in cut),
            "of": len(cut),
        },
        "accounting": accounting,
        "budget": budget,
        "loadavg_1m": loadavg()[0],
    }
    write(result, args.out)


if __name__ == "__main__":
    main()
