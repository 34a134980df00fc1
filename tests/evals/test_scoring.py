"""The evaluation harness without a service: metric values checked by hand, the gate and its
verdict, the terminal table, answer scoring over a local HTTP client, index state."""

import json
import re

import httpx
import pytest

from evals.client import ServiceClient
from evals.dataset import EvalItem, build_django_faq, load, save
from evals.gate import THRESHOLDS, Verdict, baseline, checks, gate, verdict
from evals.metrics import freshness_metric, ir_scores, percentile, ragas_scores
from evals.run import finish
from evals.state import index_state
from evals.summary import summarize
from evals.terminal import terminal_table


@pytest.mark.unit
def test_ir_metrics_equal_hand_computed_values():
    gold = {"q1": ["a"], "q2": ["b", "c"], "q3": ["z"]}
    ranked = {"q1": ["x", "a"], "q2": ["c", "y", "b", "c"], "q3": []}
    s = ir_scores(gold, ranked)
    # q1: the one relevant item at rank 2 → nDCG = 1/log2(3), MRR = 1/2.
    assert s["q1"]["ndcg@10"] == pytest.approx(0.630930, abs=1e-6) and s["q1"]["mrr@10"] == 0.5
    # q2: relevant at ranks 1 and 3 → (1 + 1/log2(4)) / (1 + 1/log2(3)); the repeat of c counts once.
    assert (
        s["q2"]["ndcg@10"] == pytest.approx(1.5 / 1.630930, abs=1e-6) and s["q2"]["recall@5"] == 1.0
    )
    assert s["q3"] == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@5": 0.0, "recall@10": 0.0}


@pytest.mark.unit
def test_ragas_context_metrics_equal_hand_computed_values():
    [r] = ragas_scores(
        [
            {
                "retrieved_context_ids": ["x", "a", "b"],
                "reference_context_ids": ["a", "c"],
                "retrieved_contexts": ["unrelated words here", "the answer is forty two"],
                "reference_contexts": ["the answer is forty two"],
            }
        ]
    )
    assert r["id_based_context_precision"] == pytest.approx(1 / 3)
    assert r["id_based_context_recall"] == pytest.approx(1 / 2)
    assert r["non_llm_context_recall"] == pytest.approx(1.0)
    # precision@k averaged over relevant positions: only position 2 is relevant → (1/2) / 1.
    assert r["non_llm_context_precision_with_reference"] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.unit
def test_freshness_metric_and_percentiles():
    m = freshness_metric()
    assert [m.score(lag_s=v, slo_s=2.0).value for v in (0.5, 2.0, 4.0, 6.0, 9.0)] == [
        1.0,
        1.0,
        0.5,
        0.0,
        0.0,
    ]
    assert m.score(lag_s=None, slo_s=2.0).value == 0.0
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([1, 2, 3, 4, 100], 95) == 100
    assert percentile([], 50) is None


@pytest.mark.unit
def test_gate_trips_on_a_worse_run():
    thresholds = {
        "min": {"hybrid.ndcg@10": 0.3},
        "max": {"freshness.deleted_returned": 0},
        "max_drop": {"hybrid.recall@10": 0.03},
    }
    good = {"hybrid.ndcg@10": 0.5, "hybrid.recall@10": 0.8, "freshness.deleted_returned": 0}
    assert gate(good, None, thresholds) == []
    assert gate(good, good, thresholds) == []
    worse = {"hybrid.ndcg@10": 0.2, "hybrid.recall@10": 0.7, "freshness.deleted_returned": 1}
    rules = {(v["metric"], v["rule"]) for v in gate(worse, good, thresholds)}
    assert rules == {
        ("hybrid.ndcg@10", "min"),
        ("freshness.deleted_returned", "max"),
        ("hybrid.recall@10", "max_drop"),
    }


@pytest.mark.unit
def test_a_part_that_did_not_run_is_skipped_never_a_regression():
    thresholds = {
        "min": {"hybrid.ndcg@10": 0.3, "freshness.freshness": 0.9},
        "max": {"freshness.missed_rate": 0.0},
        "max_drop": {"dense.ndcg@10": 0.03, "answers.answer_cites_gold": 0.05},
    }
    summary = {"hybrid.ndcg@10": 0.9}
    previous = {"dense.ndcg@10": 0.9, "answers.answer_cites_gold": 1.0}
    skipped = {"freshness": "--probes 0", "dense": "mode not run", "answers": "--no-answers"}
    assert gate(summary, previous, thresholds, skipped) == []
    status = {
        (c["metric"], c["rule"]): c["status"]
        for c in checks(summary, previous, thresholds, skipped)
    }
    assert status == {
        ("hybrid.ndcg@10", "min"): "pass",
        ("freshness.freshness", "min"): "skipped",
        ("freshness.missed_rate", "max"): "skipped",
        ("dense.ndcg@10", "max_drop"): "skipped",
        ("answers.answer_cites_gold", "max_drop"): "skipped",
    }
    # A part that ran but stopped reporting a gated number is a regression.
    missing = gate(summary, None, thresholds, {"dense": "mode not run", "answers": "x"})
    assert {(m["metric"], m["rule"]) for m in missing} == {
        ("freshness.freshness", "missing"),
        ("freshness.missed_rate", "missing"),
    }


@pytest.mark.unit
def test_the_verdict_gives_the_exit_code_against_a_run_on_the_same_dataset():
    past = [{"run_id": "a", "dataset": "dev"}, {"run_id": "b", "dataset": "faq"}]
    assert baseline(past, "dev")["run_id"] == "a"
    assert baseline([*past, {"run_id": "c"}], "dev")["run_id"] == "c"  # older history: no name
    assert baseline(past, None)["run_id"] == "b" and baseline(past, "other") is None
    thresholds = {"min": {"hybrid.ndcg@10": 0.5}}
    assert verdict({"hybrid.ndcg@10": 0.6}, None, thresholds).exit_code == 0
    failed = verdict({"hybrid.ndcg@10": 0.4}, None, thresholds)
    assert failed.exit_code == 1 and [c.metric for c in failed.regressions] == ["hybrid.ndcg@10"]
    # What report.json stores reads back as the same verdict.
    stored = {"checks": checks({"hybrid.ndcg@10": 0.4}, None, thresholds)}
    assert Verdict.of(stored) == failed


@pytest.mark.unit
def test_probes_0_with_the_shipped_thresholds_exits_0_and_says_skipped(tmp_path):
    """`freshrag eval --probes 0` used to fail on `freshness.freshness = None (missing 0.9)`."""
    results = {
        "run_id": "r1",
        "at": "2026-11-24T03:00:00Z",
        "service": "http://x",
        "dataset": {"name": "tiny", "questions": 1},
        "relevance": {
            "modes": {
                "hybrid": {
                    "ndcg@10": 0.9,
                    "recall@10": 1.0,
                    "latency_p50_ms": 20.0,
                    "latency_p95_ms": 30.0,
                }
            },
            "questions": {"hybrid": []},
            "stale_hit_rate": 0.0,
        },
        "skipped": {"freshness": "--probes 0", "answers": "--no-answers"},
    }
    results, code = finish(results, tmp_path, THRESHOLDS)
    assert code == 0 and results["regressions"] == []
    assert results["skipped_areas"]["freshness"] == "--probes 0"
    table = terminal_table(results, tmp_path / "report.html")
    assert "freshness  skipped (--probes 0)" in table
    assert "verdict: OK" in table and table.endswith(f"report: {tmp_path / 'report.html'}")
    assert re.search(r"nDCG@10 hybrid\s+0\.900\s+≥ 0\.300.*pass", table), table


@pytest.mark.unit
def test_terminal_table_marks_failures_and_a_latency_jump(tmp_path):
    def run(run_id, ndcg, p50):
        return {
            "run_id": run_id,
            "at": f"2026-11-{run_id[-2:]}T03:00:00Z",
            "service": "http://x",
            "dataset": {"name": "tiny", "questions": 1},
            "relevance": {
                "modes": {"hybrid": {"ndcg@10": ndcg, "recall@10": 1.0, "latency_p50_ms": p50}},
                "questions": {"hybrid": []},
                "stale_hit_rate": 0.0,
            },
        }

    thresholds = tmp_path / "t.toml"
    thresholds.write_text('[min]\n"hybrid.ndcg@10" = 0.5\n')
    finish(run(run_id="r23", ndcg=0.9, p50=27.0), tmp_path, thresholds)
    results, code = finish(run(run_id="r24", ndcg=0.4, p50=218.0), tmp_path, thresholds)
    assert code == 1
    table = terminal_table(results)
    assert re.search(r"nDCG@10 hybrid\s+0\.400\s+≥ 0\.500\s+0\.900\s+FAIL", table), table
    assert re.search(r"p50 hybrid\s+218 ms\s+27 ms\s+WARN \(×8\.1", table), table
    assert "verdict: REGRESSION: hybrid.ndcg@10" in table
    assert [j["metric"] for j in results["latency_jumps"]] == ["hybrid.latency_p50_ms"]
    page = (tmp_path / "report.html").read_text()
    assert "went from 27 ms to 218 ms" in page


def _mock_client(handler) -> ServiceClient:
    client = ServiceClient("http://svc", "k", "127.0.0.1:1", "documents")
    client.http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(handler))
    return client


@pytest.mark.unit
def test_answer_metrics_per_provider_and_citation_precision():
    """Each provider's answers are scored apart; citing a non-gold page lowers precision."""
    replies = {
        "q0": ("primary", ["d"]),
        "q1": ("primary", ["d", "other"]),
        "q2": ("fallback", ["other"]),
        "q3": ("none", []),
    }

    def server(request: httpx.Request) -> httpx.Response:
        qid = json.loads(request.content)["query"].rstrip("?")
        provider, docs = replies[qid]
        cites = [{"n": n, "doc_id": d, "version": 1, "text": "t"} for n, d in enumerate(docs, 1)]
        return httpx.Response(
            200,
            json={
                "answer": "a",
                "citations": cites,
                "provider": provider,
                "refused": not docs,
                "cached": False,
                "timings": {"total_ms": 5.0},
            },
        )

    from evals.relevance import run_answers

    items = [EvalItem(id=f"q{i}", question=f"q{i}?", gold_doc_ids=["d"]) for i in range(4)]
    out = run_answers(_mock_client(server), items, progress=False)
    assert out["answer_cites_gold"] == 0.5 and out["answer_refusal_rate"] == 0.25
    assert out["answer_citation_precision"] == (1 + 0.5 + 0) / 3
    by = out["by_provider"]
    assert by["primary"] == {
        "questions": 2,
        "answer_cites_gold": 1.0,
        "answer_citation_precision": 0.75,
        "answer_refusal_rate": 0.0,
    }
    assert by["fallback"]["answer_cites_gold"] == 0.0 and by["none"]["answer_refusal_rate"] == 1.0
    summary = summarize({"answers": out})
    assert summary["answers.primary.answer_citation_precision"] == 0.75


@pytest.mark.unit
def test_an_answer_past_its_deadline_counts_as_a_refusal_not_a_crash():
    """A 504 (no provider served before the deadline) is scored, and the run goes on."""

    def server(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["query"] == "slow?":
            return httpx.Response(504, json={"detail": "no answer before the deadline"})
        cites = [{"n": 1, "doc_id": "d", "version": 1, "text": "t"}]
        return httpx.Response(
            200,
            json={"answer": "a [1]", "citations": cites, "provider": "p", "refused": False},
        )

    from evals.relevance import run_answers

    items = [EvalItem(id=q, question=f"{q}?", gold_doc_ids=["d"]) for q in ("fast", "slow")]
    out = run_answers(_mock_client(server), items, progress=False, provider="p")
    rows = {r["id"]: r for r in out["rows"]}
    assert rows["slow"]["refused"] and rows["slow"]["timed_out"]
    assert rows["slow"]["skipped"] == ["deadline"] and not rows["fast"]["skipped"]
    assert out["answer_timeouts"] == 1 and out["answer_cites_gold"] == 0.5


@pytest.mark.unit
def test_answers_bypass_the_cache_or_say_they_could_not():
    bodies: list[dict] = []
    answer = {
        "answer": "a [1]",
        "citations": [{"n": 1, "doc_id": "d", "version": 1, "text": "t"}],
        "provider": "extractive",
        "refused": False,
        "cached": False,
        "timings": {"total_ms": 12.0},
    }

    def old_server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        if "cache" in body:  # a server that forbids unknown fields
            return httpx.Response(
                422, json={"detail": [{"loc": ["body", "cache"], "msg": "Extra inputs"}]}
            )
        return httpx.Response(200, json=answer | {"cached": len(bodies) == 4})  # the 3rd answer

    client = _mock_client(old_server)
    items = [EvalItem(id=f"q{i}", question=f"q{i}?", gold_doc_ids=["d"]) for i in range(3)]
    from evals.relevance import run_answers

    out = run_answers(client, items, progress=False)
    assert [("cache" in b) for b in bodies] == [True, False, False, False]  # tried once
    assert out["cache_bypassed"] is False and "cache" in out["note"]
    assert out["answer_cached_rate"] == 1 / 3 and out["answer_latency_p50_ms"] == 12.0

    bodies.clear()
    client = _mock_client(
        lambda r: (bodies.append(json.loads(r.content)), httpx.Response(200, json=answer))[1]
    )
    out = run_answers(client, items, progress=False)
    assert all(b["cache"] is False for b in bodies) and out["cache_bypassed"] is True
    assert "note" not in out


@pytest.mark.unit
def test_index_state_from_readyz_and_prometheus_metrics():
    metrics = """# HELP freshrag_ingest_dlq_total Events dead-lettered
# TYPE freshrag_ingest_dlq_total counter
freshrag_ingest_dlq_total{stage="parse"} 2.0
freshrag_ingest_dlq_total{stage="decode"} 1.0
# TYPE freshrag_ingest_events_total counter
freshrag_ingest_events_total{outcome="indexed"} 40.0
# TYPE freshrag_consumer_lag gauge
freshrag_consumer_lag{partition="0"} 3.0
freshrag_consumer_lag{partition="1"} 4.0
# TYPE freshrag_ingest_last_indexed_timestamp_seconds gauge
freshrag_ingest_last_indexed_timestamp_seconds 1.7999712e+09
"""

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(
                200,
                json={
                    "ready": True,
                    "checks": {"broker": True},
                    "index": {"documents": 638, "chunks": 9512},
                },
            )
        return httpx.Response(200, text=metrics)

    state = index_state(_mock_client(server))
    assert state["ready"] is True and (state["documents"], state["chunks"]) == (638, 9512)
    assert state["dead_letters"] == 3 and state["dead_letters_by_stage"] == {
        "parse": 2.0,
        "decode": 1.0,
    }
    assert state["backlog"] == 7 and state["events"] == {"indexed": 40.0}
    assert state["last_indexed_at"] == "2027-01-15T00:00:00Z"

    bare = index_state(_mock_client(lambda r: httpx.Response(404)))
    assert bare["documents"] is None and bare["dead_letters"] is None


@pytest.mark.unit
def test_django_faq_builder(tmp_path):
    faq = tmp_path / "docs" / "faq"
    faq.mkdir(parents=True)
    (faq / "general.txt").write_text(
        "=============\nFAQ: General\n=============\n\nWhy does Django exist?\n=====================\n\n"
        "It grew out of a newsroom.\n\nWho uses it?\n============\n\nMany sites.\n\nNotes\n=====\n\nNot a question.\n"
    )
    items = build_django_faq(tmp_path / "docs")
    assert [(i.question, i.gold_contexts) for i in items] == [
        ("Why does Django exist?", ["django/faq/general.txt#Why does Django exist?"]),
        ("Who uses it?", ["django/faq/general.txt#Who uses it?"]),
    ]
    assert items[0].gold_passages == ["It grew out of a newsroom."]
    save(items, tmp_path / "set.jsonl")
    assert load(tmp_path / "set.jsonl") == items
