"""A candidate prompt beside production without a service: the paired answers over the same
contexts (a scripted HTTP service), the gate's answer thresholds as its verdict, the report,
and what a report must show before `freshrag prompts promote` moves production."""

import json
import re
from collections import Counter

import httpx
import pytest

from evals.candidate import (
    CandidateError,
    NotPromotable,
    check_promotion,
    resolve_pair,
    run_with_candidate,
)
from evals.client import ServiceClient
from evals.dataset import EvalItem
from evals.gate import candidate_checks, candidate_verdict
from evals.run import finish
from evals.terminal import terminal_table
from retrieval.answer.prompts import REFUSAL, Prompt, PromptError, Selection

SERVED = [
    {"name": "grounded-answer", "version": 1, "labels": ["production"], "description": ""},
    {"name": "grounded-answer", "version": 2, "labels": ["canary"], "description": ""},
    {"name": "grounded-answer", "version": 3, "labels": [], "description": ""},
]
LIMITS = {"min": {"hybrid.ndcg@10": 0.3}, "max_drop": {"answers.answer_cites_gold": 0.05}}


class Service:
    """/prompts, /retrieve and /answer over one document `d`; the candidate (version 2)
    refuses the questions in `refuses`, and the sections retrieved for `moving` questions
    change on every read (the index changing under the run)."""

    def __init__(self, refuses=(), moving=()) -> None:
        self.refuses, self.moving = set(refuses), set(moving)
        self.reads: Counter[str] = Counter()
        self.answers: list[tuple[str, dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/prompts":
            return httpx.Response(200, json=SERVED)
        body = json.loads(request.content)
        q = body["query"].rstrip("?")
        if request.url.path == "/retrieve":
            self.reads[q] += 1
            text = f"about {q}" + (f" (edit {self.reads[q]})" if q in self.moving else "")
            hit = {"doc_id": "d", "version": 1, "chunk_index": 0, "chunks": [0], "text": text}
            return httpx.Response(200, json={"hits": [hit], "mode": body["mode"], "took_ms": 1})
        self.answers.append((q, body))
        version = body["prompt"]["version"]
        refused = version == 2 and q in self.refuses
        cites = [] if refused else [{"n": 1, "doc_id": "d", "version": 1, "text": "t"}]
        return httpx.Response(
            200,
            json={
                "answer": REFUSAL if refused else "a [1]",
                "citations": cites,
                "provider": "p",
                "prompt": f"grounded-answer@{version}",
                "refused": refused,
                "cached": False,
                "timings": {"total_ms": 10.0 * version},
            },
        )


def _client(service: Service) -> ServiceClient:
    client = ServiceClient("http://svc", "k", "127.0.0.1:1", "documents")
    client.http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(service))
    return client


def _items(n: int = 4) -> list[EvalItem]:
    return [EvalItem(id=f"q{i}", question=f"q{i}?", gold_doc_ids=["d"]) for i in range(n)]


def _run(service: Service, tmp_path, items=None):  # noqa: ANN001, ANN202
    client = _client(service)
    items = items or _items()
    pair = resolve_pair(client, Selection.parse("grounded-answer@canary"))
    answers, comparison = run_with_candidate(client, items, pair, progress=False)
    results = {
        "run_id": "r1",
        "at": "2026-11-24T03:00:00Z",
        "service": "http://svc",
        "dataset": {"name": "tiny", "questions": len(items)},
        "skipped": {"relevance": "--modes is empty"},
        "answers": answers,
        "prompt_comparison": comparison,
    }
    thresholds = tmp_path / "t.toml"
    thresholds.write_text('[max_drop]\n"answers.answer_cites_gold" = 0.05\n')
    return finish(results, tmp_path, thresholds)


@pytest.mark.unit
def test_both_prompts_answer_each_question_over_the_same_contexts(tmp_path):
    service = Service(refuses={"q1"}, moving={"q3"})
    results, code = _run(service, tmp_path)
    # Pinned by version, the order alternating so that neither always goes first.
    asked = [(q, b["prompt"], b["cache"]) for q, b in service.answers]
    v1, v2 = {"name": "grounded-answer", "version": 1}, {"name": "grounded-answer", "version": 2}
    assert asked == [
        ("q0", v1, False),
        ("q0", v2, False),
        ("q1", v2, False),
        ("q1", v1, False),
        ("q2", v1, False),
        ("q2", v2, False),
        ("q3", v2, False),
        ("q3", v1, False),
    ]
    assert all(n == 2 for n in service.reads.values())  # contexts read before and after
    c = results["prompt_comparison"]
    assert (c["candidate"], c["production"], c["selection"]) == (
        "grounded-answer@2",
        "grounded-answer@1",
        "grounded-answer@canary",
    )
    # q3's sections changed between its two answers: not compared, and said so.
    assert c["compared"] == 3 and [q["id"] for q in c["not_compared"]] == ["q3"]
    assert "contexts changed" in c["not_compared"][0]["why"]
    assert c["production_scores"]["answers.answer_cites_gold"] == 1.0
    assert c["candidate_scores"]["answers.answer_cites_gold"] == pytest.approx(2 / 3)
    assert c["candidate_scores"]["answers.false_refusal_rate"] == pytest.approx(1 / 3)
    assert c["candidate_scores"]["answers.answer_latency_p50_ms"] == 20.0
    # Production's answers are the run's answers, over every question; the gate is theirs.
    assert results["answers"]["prompt"] == "grounded-answer@1"
    assert len(results["answers"]["rows"]) == 4 and code == 0
    assert results["summary"]["answers.answer_cites_gold"] == 1.0
    # The candidate's own verdict: a fall of 1/3 from production in this run.
    assert c["verdict"] == "regression" and "answers.answer_cites_gold" in c["reason"]
    [check] = c["checks"]
    assert check["status"] == "fail" and check["previous"] == 1.0
    assert any("1 of 4 questions left out" in n for n in results["notes"])

    table = terminal_table(results, tmp_path / "report.html")
    assert "grounded-answer@2 (grounded-answer@canary) beside production grounded-answer@1" in table
    assert re.search(r"cite a gold doc\s+0\.667\s+drop ≤ 0\.050\s+1\.000\s+FAIL", table), table
    assert "candidate grounded-answer@2: REGRESSION" in table
    assert "promote it with" not in table
    assert table.splitlines()[-2].startswith("verdict: OK")  # the service's gate: no regression
    page = (tmp_path / "report.html").read_text()
    assert "Candidate prompt grounded-answer@2" in page and "REGRESSION" in page
    assert "1 question answered differently" in page and "<td>q1?</td>" in page
    assert "q3?: the retrieved contexts changed" in page
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["prompt_comparison"]["verdict"] == "regression"


@pytest.mark.unit
def test_a_candidate_as_good_as_production_passes_and_the_table_says_how_to_promote(tmp_path):
    results, _ = _run(Service(), tmp_path)
    c = results["prompt_comparison"]
    assert c["verdict"] == "pass" and c["compared"] == 4 and not c["not_compared"]
    table = terminal_table(results, tmp_path / "report.html")
    assert "candidate grounded-answer@2: OK, no regression against production" in table
    assert f"freshrag prompts promote grounded-answer --report {tmp_path / 'report.json'}" in table


@pytest.mark.unit
def test_the_candidate_verdict_applies_only_the_gates_answer_thresholds():
    limits = {
        "min": {"hybrid.ndcg@10": 0.3},
        "max_drop": {
            "answers.answer_cites_gold": 0.05,
            "answers.unanswerable_refusal_rate": 0.1,
        },
    }
    prod = {"answers.answer_cites_gold": 1.0}
    checks = candidate_checks({"answers.answer_cites_gold": 0.96}, prod, limits)
    # Relevance is not the prompt's doing; a metric neither prompt measured is n/a.
    assert [(c.metric, c.status) for c in checks] == [
        ("answers.answer_cites_gold", "pass"),
        ("answers.unanswerable_refusal_rate", "n/a"),
    ]
    assert candidate_verdict(checks, compared=5)[0] == "pass"
    assert candidate_verdict(checks, compared=0) == (
        "inconclusive",
        "no question was answered by both prompts over the same contexts",
    )
    worse = candidate_checks({"answers.answer_cites_gold": 0.9}, prod, limits)
    assert candidate_verdict(worse, 5) == (
        "regression",
        "regresses against production on answers.answer_cites_gold",
    )
    # Missing from the candidate but measured for production: the candidate lost it.
    lost = candidate_checks({}, prod, limits)
    assert lost[0].status == "fail" and lost[0].reason == "missing"
    # Thresholds that gate no answer metric give no evidence either way.
    none = candidate_checks(prod, prod, {"min": {"hybrid.ndcg@10": 0.3}})
    assert none == [] and candidate_verdict(none, 5)[0] == "inconclusive"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope@canary", "unknown prompt 'nope'; known: grounded-answer"),
        ("grounded-answer@beta", "no version labelled 'beta'; labels: canary, production"),
        ("grounded-answer@9", "no version 9; versions: 1, 2, 3"),
        ("grounded-answer@production", "is grounded-answer@1, the production version itself"),
        ("grounded-answer@1", "the production version itself"),
    ],
)
def test_a_candidate_the_service_does_not_serve_is_named_before_anything_runs(text, message):
    service = Service()
    with pytest.raises(CandidateError, match=re.escape(message)) as err:
        resolve_pair(_client(service), Selection.parse(text))
    assert text in str(err.value) and not service.answers and not service.reads


@pytest.mark.unit
def test_a_prompt_selection_is_name_at_label_or_version():
    assert Selection.parse("grounded-answer@canary") == Selection("grounded-answer", "canary")
    assert Selection.parse(" grounded-answer@2 ") == Selection("grounded-answer", version=2)
    assert str(Selection.parse("grounded-answer@2")) == "grounded-answer@2"
    for bad in ("grounded-answer", "@canary", "grounded-answer@", "a@b@c"):
        with pytest.raises(PromptError, match="NAME@LABEL or NAME@VERSION"):
            Selection.parse(bad)


def _local(production: int = 1) -> list[Prompt]:
    return [
        Prompt("grounded-answer", v, ("production",) if v == production else (), "s", "u")
        for v in (1, 2, 3)
    ]


def _report(verdict: str = "pass", reason: str = "no regression against production") -> dict:
    return {
        "run_id": "r9",
        "prompt_comparison": {
            "selection": "grounded-answer@canary",
            "name": "grounded-answer",
            "candidate": "grounded-answer@2",
            "production": "grounded-answer@1",
            "verdict": verdict,
            "reason": reason,
        },
    }


@pytest.mark.unit
def test_promotion_needs_a_passing_report_that_still_matches_the_files():
    pair = check_promotion(_report(), "grounded-answer", _local(), "in T")
    assert (pair.candidate, pair.production) == (2, 1)
    # Already moved (promote run twice): nothing to refuse, nothing to move.
    assert (
        check_promotion(_report(), "grounded-answer", _local(production=2), "in T").candidate == 2
    )
    refusals = [
        ({"run_id": "r9"}, "grounded-answer", _local(), "run r9 scored no candidate prompt"),
        (_report(), "other", _local(), "compared a candidate of 'grounded-answer', not of 'other'"),
        (
            _report("regression", "regresses against production on answers.answer_cites_gold"),
            "grounded-answer",
            _local(),
            "grounded-answer@2 is not promoted: in run r9 it regresses against production on "
            "answers.answer_cites_gold",
        ),
        (
            _report("inconclusive", "no question was answered by both prompts"),
            "grounded-answer",
            _local(),
            "in run r9 it was inconclusive: no question was answered by both prompts",
        ),
        (
            _report(),
            "grounded-answer",
            _local(production=3),
            "but production is now grounded-answer@3 (in T): evaluate it again",
        ),
        (_report(), "grounded-answer", _local()[:1], "has no version 2"),
    ]
    for report, name, local, message in refusals:
        with pytest.raises(NotPromotable, match=re.escape(message)):
            check_promotion(report, name, local, "in T")
