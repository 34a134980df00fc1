"""The evaluation harness against a live service (real broker, real worker, real HTTP): a
paused worker, a release replay, the held-out FAQ, refusals, the judge, the report page, a
candidate prompt beside production."""

import json
import os
import re
import shutil
import subprocess
import threading

import pytest

from api.app import create_app
from evals.client import ServiceClient
from evals.dataset import EvalItem, save
from evals.gate import THRESHOLDS
from evals.replay import run_replay
from evals.run import EvalConfig, finish, run_eval
from evals.terminal import terminal_table
from freshrag.runtime import ServerThread
from ingest.consumer import IngestWorker
from retrieval.answer.prompts import REFUSAL
from tests.conftest import free_port, make_indexer, make_services, publish_events, upsert, wait_for
from tests.llm_servers import ScriptedLLM

# --- against a live service -----------------------------------------------------------------

FAQ = {
    "faq/deploy.md": "# Deploying\n\n## How do I deploy with Gunicorn?\n\nInstall gunicorn and run gunicorn "
    "myproject.wsgi behind a reverse proxy.\n\n## How do I serve static files?\n\nRun "
    "collectstatic and let the web server serve the STATIC_ROOT folder.",
    "faq/models.md": "# Models\n\n## How do I see the raw SQL queries?\n\nLook at connection.queries when "
    "DEBUG is on, or use the query's str().\n\n## Can I use a legacy database?\n\nYes, "
    "inspectdb generates models from existing tables.",
}
ITEMS = [
    EvalItem(
        id="q1",
        question="How do I deploy with Gunicorn?",
        gold_doc_ids=["faq/deploy.md"],
        gold_contexts=["faq/deploy.md#How do I deploy with Gunicorn?"],
        gold_passages=["Install gunicorn and run gunicorn myproject.wsgi behind a reverse proxy."],
    ),
    EvalItem(
        id="q2",
        question="How do I see the raw SQL queries?",
        gold_doc_ids=["faq/models.md"],
        gold_contexts=["faq/models.md#How do I see the raw SQL queries?"],
    ),
    EvalItem(id="q3", question="Can I use a legacy database?", gold_doc_ids=["faq/models.md"]),
]


@pytest.fixture
def live(settings, edge_index, dense, sparse, tmp_path):
    indexer = make_indexer(edge_index, dense, sparse)
    services = make_services(settings, edge_index, dense, sparse)
    server = ServerThread(create_app(services), "127.0.0.1", free_port()).start()
    worker = IngestWorker(settings, indexer, client_id="eval-worker")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    publish_events(
        settings, [upsert(d, text, 1, acl=["eng"], tenant="acme") for d, text in FAQ.items()]
    )
    wait_for(lambda: all(edge_index.get_document("acme", d) for d in FAQ), timeout=60)
    dataset = tmp_path / "set.jsonl"
    save(ITEMS, dataset)
    cfg = EvalConfig(
        url=server.url,
        api_key="key-a",
        bootstrap=settings.kafka_bootstrap_servers,
        topic=settings.topic,
        dataset=dataset,
        out_dir=tmp_path / "eval",
        probes=3,
        probe_timeout_s=30,
        slo_s=5.0,
        thresholds=None,
        tenant="acme",
        acl=["eng"],
        progress=False,
    )
    yield cfg, worker, thread
    worker.stop()
    thread.join(30)
    server.stop()


def _faq_service(settings, edge_index, dense, sparse) -> ServerThread:  # noqa: ANN001
    """The FAQ indexed for acme/eng and a real HTTP server over it, on `settings`."""
    make_indexer(edge_index, dense, sparse).apply(
        [upsert(d, text, 1, acl=["eng"], tenant="acme") for d, text in FAQ.items()]
    )
    services = make_services(settings, edge_index, dense, sparse)
    return ServerThread(create_app(services), "127.0.0.1", free_port()).start()


def _answers_only(url: str, settings, dataset, out_dir, **extra) -> EvalConfig:  # noqa: ANN001
    """A run that scores answers only (no retrieval modes, no freshness probes)."""
    return EvalConfig(
        url=url,
        api_key="key-a",
        bootstrap=settings.kafka_bootstrap_servers,
        topic=settings.topic,
        dataset=dataset,
        out_dir=out_dir,
        modes=[],
        probes=0,
        progress=False,
        **extra,
    )


@pytest.mark.broker
@pytest.mark.model
def test_eval_run_then_paused_worker_is_flagged(live, tmp_path):
    cfg, worker, thread = live
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text(
        '[min]\n"hybrid.ndcg@10" = 0.5\n[max]\n"freshness.missed_rate" = 0.0\n'
        '"freshness.deleted_returned" = 0\n"freshness.stale_hit_rate" = 0.0\n'
    )
    cfg.thresholds = thresholds
    results, code = run_eval(cfg)
    assert code == 0, results["regressions"]
    s = results["summary"]
    assert s["hybrid.ndcg@10"] >= 0.9 and s["hybrid.recall@10"] == 1.0
    assert {"dense.mrr@10", "sparse.id_based_context_recall", "hybrid.latency_p95_ms"} <= set(s)
    assert s["freshness.missed"] == 0 and s["freshness.deleted_returned"] == 0
    assert s["freshness.lag_p95_s"] < 30 and s["freshness.stale_hit_rate"] == 0.0
    assert s["answers.answer_cites_gold"] == 1.0
    # Bypassing the answer cache, or saying the service would not let it.
    assert results["answers"]["cache_bypassed"] or "cache" in results["answers"]["note"]
    assert results["index"]["ready"] is True and results["index"]["dead_letters"] == 0
    assert (cfg.out_dir / "report.html").exists() and len(
        list((cfg.out_dir / "history").glob("*.json"))
    ) == 1

    worker.stop()  # the nightly job must notice ingestion has stalled
    thread.join(30)
    cfg.probe_timeout_s, cfg.modes, cfg.answers = 3.0, ["hybrid"], False
    later, code = run_eval(cfg)
    assert code == 1
    assert later["freshness"]["missed"] == 9 and later["freshness"]["freshness"] == 0.0
    assert any(r["metric"] == "freshness.missed_rate" for r in later["regressions"])
    assert (
        later["previous"]["run_id"] == results["run_id"]
        or later["previous"]["summary"] == results["summary"]
    )
    page = (cfg.out_dir / "report.html").read_text()
    assert "REGRESSION" in page and "freshness.missed_rate" in page
    table = terminal_table(later)
    assert "answers    skipped (--no-answers)" in table
    assert "verdict: REGRESSION: freshness" in table


@pytest.mark.broker
@pytest.mark.model
def test_release_replay_counts_what_changed(live, tmp_path):
    cfg, _, _ = live
    old, new = tmp_path / "old", tmp_path / "new"
    for root in (old, new):
        root.mkdir()
    sections = "\n\n".join(
        f"## Topic {i}\n\nStable paragraph number {i} about subject {i}." for i in range(6)
    )
    (old / "a.txt").write_text("# A\n\n" + sections)
    (new / "a.txt").write_text(
        "# A\n\n" + sections.replace("paragraph number 3", "paragraph NUMBER three")
    )
    (old / "b.txt").write_text("# B\n\nUnchanged document.")
    (new / "b.txt").write_text("# B\n\nUnchanged document.")
    (old / "gone.txt").write_text("# Gone\n\nRemoved in the new release.")
    (new / "new.txt").write_text("# New\n\nAdded in the new release.")
    client = ServiceClient(cfg.url, cfg.api_key, cfg.bootstrap, cfg.topic)
    try:
        r = run_replay(
            client,
            old,
            new,
            "old->new",
            mime="text/markdown",
            timeout_s=60,
            tenant="acme",
            acl=["eng"],
            progress=False,
        )
    finally:
        client.close()
    assert (r["docs_total"], r["docs_changed"], r["docs_added"], r["docs_removed"]) == (3, 1, 1, 1)
    assert r["chunks_reembedded"] == 2, "the edited section and the new document"
    # As many chunks as the chunker cuts from the new release (its own tests pin the cuts).
    from ingest.chunker import Chunker
    from ingest.parser import parse

    chunker = Chunker(128, 0)
    cut = sum(len(chunker.chunk(parse(f.read_text(), "text/markdown"))) for f in new.iterdir())
    assert r["chunks_total"] == cut and r["docs_not_reflected"] == 0


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _report_results(run_id: str, at: str, p50: float) -> dict:
    questions = [
        {
            "id": f"q{i}",
            "question": f"Why {i}?",
            "ndcg@10": 1.0 if i else 0.0,
            "gold": [f"faq.md#Why {i}?"],
            "gold_rank": 1 if i else None,
            "retrieved": [f"faq.md#Why {i}?" if i else "other.md#Intro", "other.md#More"],
        }
        for i in range(4)
    ]
    return {
        "run_id": run_id,
        "at": at,
        "service": "http://x",
        "dataset": {"name": "tiny", "questions": 4},
        "relevance": {
            "modes": {
                "hybrid": {
                    "ndcg@10": 0.8,
                    "recall@10": 1.0,
                    "mrr@10": 0.7,
                    "latency_p50_ms": p50,
                    "latency_p95_ms": p50 * 1.5,
                    "latencies_ms": [p50 * f for f in (0.8, 1.0, 1.1, 1.5)],
                }
            },
            "questions": {"hybrid": questions},
            "stale_hit_rate": 0.0,
        },
        "freshness": {
            "slo_s": 5,
            "missed": 0,
            "missed_rate": 0.0,
            "freshness": 1.0,
            "lag_p50_s": 0.4,
            "lag_p95_s": 1.2,
            "deleted_returned": 0,
            "stale_hit_rate": 0.0,
            "samples": [
                {"op": op, "lag_s": lag}
                for op, lag in (("add", 0.4), ("change", 0.5), ("delete", 1.2), ("add", 0.35))
            ],
        },
        "index": {"ready": True, "documents": 12, "chunks": 80, "dead_letters": 0.0},
    }


def _headless(*args: str, tmp_path) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chrome'}",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.unit
@pytest.mark.slow  # starts a headless Chromium
def test_report_page_opens_in_headless_chromium(tmp_path):
    """The page renders every figure; the screenshot (report.png) is for a person to look at."""
    if not _chromium():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("chromium is not installed here")
    finish(_report_results("r1", "2026-11-23T03:00:00Z", 27.0), tmp_path, THRESHOLDS)
    results, code = finish(
        _report_results("r2", "2026-11-24T03:00:00Z", 218.0), tmp_path, THRESHOLDS
    )
    assert code == 0, results["regressions"]
    page = tmp_path / "report.html"
    dom = _headless("--dump-dom", page.as_uri(), tmp_path=tmp_path).stdout
    loaded = re.search(r'data-figures-loaded="(\d+)"', dom)
    expected = re.search(r'data-figures-expected="(\d+)"', dom)
    # relevance, latency, freshness, trends (two runs): all four decoded by the browser.
    assert loaded and expected and int(loaded.group(1)) == int(expected.group(1)) == 4, dom[:500]
    assert "nDCG@10 hybrid" in dom and "0.800" in dom and "READY" in dom
    assert "went from 27 ms to 218 ms" in dom  # the latency jump is marked
    assert "Why 0?" in dom and "Why 1?" not in dom  # failures only in the questions table
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["hybrid.ndcg@10"] == 0.8

    shot = tmp_path / "report.png"
    _headless("--window-size=1280,2600", f"--screenshot={shot}", page.as_uri(), tmp_path=tmp_path)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2600)
        colours = image.convert("RGB").resize((64, 130)).getcolors(64 * 130)
    assert colours and len(colours) > 50, "the screenshot is (nearly) blank"


@pytest.mark.broker
@pytest.mark.model
def test_llm_judged_metrics_through_an_openai_compatible_judge(live):
    from tests.llm_servers import JudgeLLM

    cfg, _, _ = live
    judge = JudgeLLM().start()
    try:
        cfg.judge = (judge.base_url, "judge-model", "jk")
        cfg.modes, cfg.probes = ["hybrid"], 0
        results, _ = run_eval(cfg)
    finally:
        judge.stop()
    scores = results["judge"]
    assert set(scores) == {"faithfulness", "answer_relevancy", "llm_context_precision"}
    assert all(v is not None and 0.0 <= v <= 1.0 for v in scores.values()), scores
    assert scores["faithfulness"] == 1.0  # the judge supports every statement
    assert judge.requests and all(r["body"]["model"] == "judge-model" for r in judge.requests)
    assert "judge.faithfulness" in results["summary"]


# --- the held-out FAQ: the FAQ pages indexed without their question headings -------------------

HELDOUT_RST = """\
============
FAQ: General
============

Why does Django exist?
======================

It grew out of a newsroom that shipped web applications on journalism deadlines.

Who maintains the framework?
============================

A foundation and many volunteers maintain it.
"""


@pytest.mark.broker
@pytest.mark.model
def test_heldout_faq_replaces_the_question_headings_while_scoring_then_restores(live, tmp_path):
    from evals.dataset import load as load_set
    from evals.heldout import heldout_faq_indexed, run_eval_with_heldout_faq
    from ingest.sample import sample_metadata

    cfg, _, _ = live
    docs = tmp_path / "docs"
    (docs / "faq").mkdir(parents=True)
    page = docs / "faq" / "general.txt"
    page.write_text(HELDOUT_RST)
    doc_id = "django/faq/general.txt"
    client = ServiceClient(cfg.url, cfg.api_key, cfg.bootstrap, cfg.topic)
    try:
        client.publish(
            [
                upsert(
                    doc_id,
                    HELDOUT_RST,
                    5,
                    mime="text/x-rst",
                    tenant="acme",
                    acl=["eng"],
                    metadata=sample_metadata(page, docs, "5.2.8"),
                )
            ]
        )
        wait_for(lambda: client.indexed_version(doc_id, fresh=True) == 5, timeout=60)

        with heldout_faq_indexed(client, docs, "5.2.8", "acme", ["eng"], timeout_s=60) as run:
            assert run.before == {doc_id: 5} and run.skipped == []
            assert [i.gold_contexts for i in run.items] == [
                [f"{doc_id}#Entry 1"],
                [f"{doc_id}#Entry 2"],
            ]
            hits, _ = client.retrieve(
                "newsroom journalism deadlines", "sparse", 5, {"doc_id": doc_id}
            )
            assert hits and {h["version"] for h in hits} == {6}
            assert hits[0]["section"] == "Entry 1" and "exist?" not in hits[0]["text"]
            assert hits[0]["metadata"]["variant"] == "faq-heldout"
        assert client.indexed_version(doc_id, fresh=True) == 7  # the original, restored
        hits, _ = client.retrieve("newsroom journalism deadlines", "sparse", 5, {"doc_id": doc_id})
        assert (
            hits[0]["section"] == "Why does Django exist?" and "variant" not in hits[0]["metadata"]
        )
        assert hits[0]["metadata"]["doc_type"] == "faq"

        # The whole run: a dev question with gold on the FAQ page, renamed while it is held out.
        dataset = tmp_path / "dev.jsonl"
        save(
            [
                EvalItem(
                    id="dev-1",
                    question="Where did the framework come from originally?",
                    gold_doc_ids=[doc_id],
                    gold_contexts=[f"{doc_id}#Why does Django exist?"],
                )
            ],
            dataset,
        )
        cfg.dataset, cfg.modes, cfg.probes, cfg.answers = dataset, ["sparse"], 0, False
        results, _ = run_eval_with_heldout_faq(cfg, docs, "5.2.8", timeout_s=60)
        asked = load_set(cfg.out_dir / "dev+faq-heldout.jsonl")
        assert [(i.id, i.gold_contexts) for i in asked] == [
            ("dev-1", [f"{doc_id}#Entry 1"]),
            ("heldout-general-01", [f"{doc_id}#Entry 1"]),
            ("heldout-general-02", [f"{doc_id}#Entry 2"]),
        ]
        assert results["dataset"]["name"] == "dev+faq-heldout.jsonl"
        assert results["dataset"]["questions"] == 3
        per_q = {q["id"]: q for q in results["relevance"]["questions"]["sparse"]}
        assert per_q["heldout-general-02"]["gold_rank"] is not None
        # The question headings were not in the index: no hit on this page carries one.
        mine = [r for q in per_q.values() for r in q["retrieved"] if r.startswith(doc_id)]
        assert mine and not any(r.endswith("?") for r in mine)
        assert client.indexed_version(doc_id, fresh=True) == 9  # restored again
    finally:
        client.close()


@pytest.mark.broker
@pytest.mark.model
def test_unanswerable_questions_are_scored_as_refusals_not_ranked(live, tmp_path):
    cfg, _, _ = live
    dataset = tmp_path / "with-unanswerable.jsonl"
    unanswerable = EvalItem(
        id="u1", question="How do I enable the built-in GraphQL endpoint?", answerable=False
    )
    save([*ITEMS, unanswerable], dataset)
    cfg.dataset, cfg.modes, cfg.probes = dataset, ["sparse"], 0
    results, _ = run_eval(cfg)
    assert results["dataset"] == {"name": dataset.name, "questions": 4, "unanswerable": 1}
    assert [q["id"] for q in results["relevance"]["questions"]["sparse"]] == ["q1", "q2", "q3"]
    rows = {r["id"]: r for r in results["answers"]["rows"]}
    assert set(rows) == {"q1", "q2", "q3", "u1"} and rows["u1"]["answerable"] is False
    s = results["summary"]
    assert s["answers.unanswerable_questions"] == 1
    # No indexed page mentions GraphQL: refused before any provider was asked.
    assert rows["u1"]["refused"] and rows["u1"]["provider"] == "none"
    assert s["answers.unanswerable_refusal_rate"] == 1.0
    assert s["answers.none.answer_refusal_rate"] == 1.0
    assert (
        s["answers.false_refusal_rate"] == sum(rows[q]["refused"] for q in ("q1", "q2", "q3")) / 3
    )
    assert s["answers.answer_cites_gold"] == 1.0  # the unanswerable question has no gold to cite


@pytest.mark.broker
@pytest.mark.model
def test_each_provider_alone_scores_a_failing_primary_the_chain_hides(
    tmp_path, broker, edge_index, dense, sparse
):
    """The chain's answers all come from the extractive fallback while the primary fails;
    `--each-provider` asks each alone and shows the primary answering nothing."""
    from tests.conftest import make_settings
    from tests.llm_servers import ScriptedLLM

    llm = ScriptedLLM("openai", default=("status", 500)).start()
    chain = [
        {"kind": "openai", "name": "primary", "base_url": llm.base_url, "model": "m", "retries": 0},
        {"kind": "extractive"},
    ]
    settings = make_settings(tmp_path, broker, llm_chain=chain)
    server = _faq_service(settings, edge_index, dense, sparse)
    try:
        unanswerable = EvalItem(
            id="u1", question="How do I enable the built-in GraphQL endpoint?", answerable=False
        )
        dataset = tmp_path / "set.jsonl"
        save([*ITEMS, unanswerable], dataset)
        cfg = _answers_only(
            server.url, settings, dataset, tmp_path / "eval", thresholds=None, each_provider=True
        )
        results, _ = run_eval(cfg)
    finally:
        server.stop()
        llm.stop()
    answers = results["answers"]
    assert set(answers["by_provider"]) == {"extractive", "none"}, "the chain hides the primary"
    alone = answers["alone"]
    assert list(alone) == ["primary", "extractive"]
    assert alone["primary"]["answer_cites_gold"] == 0.0
    assert alone["primary"]["false_refusal_rate"] == 1.0
    assert alone["primary"]["provider_failures"] == 3  # failed, then its circuit opened
    assert alone["extractive"]["answer_cites_gold"] == 1.0
    assert alone["extractive"]["provider_failures"] == 0
    for name in alone:  # no source names GraphQL: refused before either is asked
        assert alone[name]["unanswerable_refusal_rate"] == 1.0
    s = results["summary"]
    assert s["answers.alone.primary.answer_cites_gold"] == 0.0
    assert s["answers.alone.extractive.answer_cites_gold"] == 1.0
    page = (cfg.out_dir / "report.html").read_text()
    assert "Each answer provider alone" in page and "primary" in page
    table = terminal_table(results)
    assert "primary alone: cites gold 0.000" in table


class PromptAwareLLM(ScriptedLLM):
    """An OpenAI-compatible model that answers from source [1], except under the canary
    prompt (grounded-answer v2 asks for a one-sentence summary first) while `canary_refuses`."""

    canary_refuses = True

    def __init__(self) -> None:
        super().__init__("openai")

    def _body(self, text: str, request: dict) -> dict:
        canary = "one-sentence summary" in request["messages"][0]["content"]
        text = REFUSAL if canary and self.canary_refuses else "From the sources [1]."
        return super()._body(text, request)


@pytest.mark.broker
@pytest.mark.model
def test_a_candidate_prompt_is_scored_beside_production_then_refused_or_promoted(
    tmp_path, broker, edge_index, dense, sparse
):
    from click.testing import CliRunner

    from evals.candidate import CandidateError
    from freshrag.cli import cli
    from retrieval.answer.prompts import TEMPLATES, PromptRegistry, Selection
    from tests.conftest import make_settings

    llm = PromptAwareLLM().start()
    chain = [
        {"kind": "openai", "name": "llm", "base_url": llm.base_url, "model": "m", "retries": 0}
    ]
    settings = make_settings(tmp_path, broker, llm_chain=chain)
    server = _faq_service(settings, edge_index, dense, sparse)
    dataset = tmp_path / "set.jsonl"
    save(ITEMS, dataset)
    cfg = _answers_only(
        server.url,
        settings,
        dataset,
        tmp_path / "refusing",
        thresholds=THRESHOLDS,
        prompt=Selection.parse("grounded-answer@beta"),
    )
    try:
        with pytest.raises(CandidateError, match="no version labelled 'beta'"):
            run_eval(cfg)  # named before anything is scored
        assert not llm.requests
        r = CliRunner().invoke(
            cli,
            ["eval", "--url", server.url, "--api-key", "key-a", "--probes", "0", "--modes", ""]
            + ["--prompt", "nope@canary", "--dataset", str(dataset)],
            env={"FRESHRAG_DATA_DIR": str(tmp_path / "data")},
        )
        assert r.exit_code == 2 and "unknown prompt 'nope'" in r.output, r.output
        cfg.prompt = Selection.parse("grounded-answer@canary")
        refusing, code = run_eval(cfg)
        llm.canary_refuses = False
        cfg.out_dir = tmp_path / "answering"
        answering, _ = run_eval(cfg)
    finally:
        server.stop()
        llm.stop()
    assert code == 0  # production's answers are the run's: the service did not regress
    c = refusing["prompt_comparison"]
    assert (c["candidate"], c["production"], c["compared"]) == (
        "grounded-answer@2",
        "grounded-answer@1",
        3,
    )
    assert {r["prompt"] for r in refusing["answers"]["rows"]} == {"grounded-answer@1"}
    assert {r["prompt"] for r in c["rows"]} == {"grounded-answer@2"}
    assert c["production_scores"]["answers.answer_cites_gold"] == 1.0
    assert c["candidate_scores"]["answers.false_refusal_rate"] == 1.0
    assert c["verdict"] == "regression"
    assert answering["prompt_comparison"]["verdict"] == "pass"
    systems = [q["body"]["messages"][0]["content"] for q in llm.requests]
    assert sum("one-sentence summary" in s for s in systems) == 6 and len(systems) == 12

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    promote = ["prompts", "promote", "grounded-answer", "--templates", str(templates)]
    r = CliRunner().invoke(cli, [*promote, "--report", str(tmp_path / "refusing")])
    assert r.exit_code == 1 and "regresses against production" in r.output, r.output
    assert PromptRegistry.load(templates).resolve().ref == "grounded-answer@1"
    r = CliRunner().invoke(cli, [*promote, "--report", str(tmp_path / "answering")])
    assert r.exit_code == 0, r.output
    assert PromptRegistry.load(templates).resolve().ref == "grounded-answer@2"


@pytest.mark.broker
@pytest.mark.model
def test_the_report_costs_each_answered_question_and_shows_the_caches_savings(
    tmp_path, broker, edge_index, dense, sparse
):
    """The usage section comes from the service's ledger: the run's provider calls (what the
    local OpenAI-protocol server served), priced, per answered question; and the answer
    cache's savings over the last day, every key's when the eval's key is an admin key."""
    import httpx

    from tests.conftest import make_settings

    llm = ScriptedLLM("openai", default=("ok", "From the sources [1].")).start()
    chain = [{"kind": "openai", "base_url": llm.base_url, "model": "gpt-x", "retries": 0}]
    keys = {
        "key-a": {"tenant": "acme", "groups": ["eng"]},
        "key-ops": {"tenant": "acme", "groups": ["eng"], "admin": True},
    }
    prices = {"gpt-x": {"input": 2.0, "output": 8.0}}

    def priced(request: dict) -> float:  # what the server billed for it, in µUSD
        return ScriptedLLM._input_tokens(request["body"]) * 2.0 + len(llm.default[1].split()) * 8.0

    settings = make_settings(tmp_path, broker, llm_chain=chain, api_keys=keys, prices=prices)
    server = _faq_service(settings, edge_index, dense, sparse)
    try:
        # Another team's traffic earlier in the day: one call, then a cache hit on it.
        with httpx.Client(base_url=server.url, headers={"X-API-Key": "key-a"}) as http:
            for _ in range(2):
                body = {"query": ITEMS[0].question, "cache": True}
                assert http.post("/answer", json=body).status_code == 200
        before = len(llm.requests)
        billed = [priced(r) for r in llm.requests]
        dataset = tmp_path / "set.jsonl"
        save(ITEMS, dataset)
        cfg = _answers_only(server.url, settings, dataset, tmp_path / "eval", thresholds=None)
        cfg.api_key = "key-ops"
        results, _ = run_eval(cfg)
        own = _answers_only(server.url, settings, dataset, tmp_path / "eval-a", thresholds=None)
        own_results, _ = run_eval(own)  # not an admin key: the savings are its own
    finally:
        server.stop()
        llm.stop()
    usage = results["usage"]
    run_calls = llm.requests[before : before + usage["provider_calls"]]
    assert usage["provider_calls"] == len(ITEMS) == usage["answered"]  # no refusal, no cache
    cost = sum(priced(r) for r in run_calls) / 1e6
    assert usage["cost_usd"] == pytest.approx(cost)
    assert usage["cost_per_answer_usd"] == pytest.approx(cost / len(ITEMS), rel=1e-4)
    assert usage["window_scope"] == "all"
    assert usage["cache_hits"] == 1 and usage["cache_hit_rate"] == pytest.approx(1 / 5)
    assert usage["cache_saved_usd"] == pytest.approx(billed[0] / 1e6)
    assert results["summary"]["usage.cost_per_answer_usd"] == pytest.approx(
        cost / len(ITEMS), rel=1e-4
    )
    mine = own_results["usage"]
    assert mine["window_scope"] == "key" and mine["cache_hits"] == 1  # key-a made the hit
    assert mine["provider_calls"] == len(ITEMS)
    page = (cfg.out_dir / "report.html").read_text()
    assert "Usage and cost" in page and "cost per answered question" in page
    assert "cost per answered question" in terminal_table(results)
