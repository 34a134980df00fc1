"""/answer end to end on real indexes: extractive grounding, refusals, the semantic cache, prompts, SSE."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from retrieval.answer.cache import AnswerCache
from retrieval.answer.gateway import DeadlineExceeded
from retrieval.answer.prompts import PromptError, PromptRegistry
from retrieval.answer.service import AnswerService, build_gateway
from retrieval.search import Principal, Retriever
from tests.conftest import delete, make_indexer, make_services, make_settings, upsert
from tests.llm_servers import ScriptedLLM

A = {"Authorization": "Bearer key-a"}
A_SALES = {"Authorization": "Bearer key-a-sales"}
B = {"Authorization": "Bearer key-b"}
RUNBOOK = (
    "# Worker runbook\n\n## Stopping\n\nTo stop the ingest worker cleanly, send it SIGTERM. "
    "It finishes the batch in hand, commits offsets and leaves the consumer group.\n\n"
    "## Scaling\n\nAdd workers to the consumer group to spread partitions across machines."
)
RUNBOOK_V2 = RUNBOOK.replace("send it SIGTERM", "run freshrag drain on it")
QUESTION = "How do I stop the ingest worker cleanly?"
PARAPHRASE = "How can I stop the ingest worker cleanly?"


def seed(indexer):
    indexer.apply(
        [
            upsert("runbook", RUNBOOK, 1, tenant="acme", acl=["eng"]),
            upsert(
                "runbook", RUNBOOK.replace("SIGTERM", "SIGINT"), 1, tenant="globex", acl=["eng"]
            ),
            upsert(
                "pricing",
                "# Pricing\n\nThe enterprise plan is billed every quarter.",
                1,
                tenant="acme",
                acl=["sales"],
            ),
        ]
    )


@pytest.fixture
def service(index, dense, sparse, tmp_path):
    settings = make_settings(tmp_path)
    seed(make_indexer(index, dense, sparse))
    retriever = Retriever(index, dense, sparse)
    return AnswerService(
        retriever, build_gateway(settings, dense), AnswerCache(index, 0.93, 3600), 1500
    )


def ask(service, who, question=QUESTION, filters=None):
    prompt = PromptRegistry.load().resolve()
    return service.answer(who, question, 5, "hybrid", [], filters or {}, prompt)


ENG = Principal("a", "acme", ("eng",))


@pytest.mark.model
def test_extractive_answer_cites_only_retrieved_chunks(service):
    out = ask(service, ENG)
    assert (
        not out["refused"]
        and out["provider"] == "extractive"
        and out["prompt"] == "grounded-answer@1"
    )
    assert "SIGTERM" in out["answer"]
    assert out["citations"] and all(
        c["doc_id"] == "runbook" and c["version"] == 1 for c in out["citations"]
    )
    for c in out["citations"]:
        assert f"[{c['n']}]" in out["answer"]
    assert {"embed_ms", "retrieve_ms", "generate_ms", "total_ms"} <= set(out["timings"])


@pytest.mark.model
def test_question_about_something_absent_is_refused(service):
    out = ask(service, ENG, "What is the boiling point of liquid nitrogen on Jupiter?")
    assert out["refused"] and out["citations"] == []
    assert ask(service, Principal("x", "nobody", ("eng",)))["refused"]  # nothing retrievable at all


@pytest.mark.model
def test_cache_hits_on_a_paraphrase_and_misses_after_update_or_delete(
    service, index, dense, sparse
):
    first = ask(service, ENG)
    again = ask(service, ENG, PARAPHRASE)
    assert not first["cached"] and again["cached"] and again["answer"] == first["answer"]
    assert again["cache_similarity"] >= 0.93

    make_indexer(index, dense, sparse).apply(
        [upsert("runbook", RUNBOOK_V2, 2, tenant="acme", acl=["eng"])]
    )
    fresh = ask(service, ENG)
    assert not fresh["cached"] and "freshrag drain" in fresh["answer"]
    assert {c["version"] for c in fresh["citations"]} == {2}
    assert ask(service, ENG)["cached"]

    make_indexer(index, dense, sparse).apply([delete("runbook", 3, tenant="acme", acl=["eng"])])
    gone = ask(service, ENG)
    assert not gone["cached"] and all(c["doc_id"] != "runbook" for c in gone["citations"])


@pytest.mark.model
def test_cache_is_never_shared_across_tenants_or_groups(service):
    assert not ask(service, ENG)["cached"]
    globex = ask(service, Principal("b", "globex", ("eng",)))
    assert not globex["cached"] and "SIGINT" in globex["answer"]
    sales = ask(service, Principal("s", "acme", ("sales",)))
    assert not sales["cached"]
    assert all(c["doc_id"] != "runbook" for c in sales["citations"])
    assert not ask(service, ENG, filters={"doc_id": "runbook"})["cached"], (
        "filters are part of the scope"
    )


@pytest.mark.model
def test_cache_entries_expire(index, dense):
    now = [1000.0]
    cache = AnswerCache(index, 0.93, ttl_s=60, clock=lambda: now[0])
    vector = dense.encode_query(QUESTION)
    cache.put(vector, "scope", {"answer": "x [1]"}, [])
    assert cache.get(vector, "scope")["answer"] == "x [1]"
    assert cache.get(vector, "other-scope") is None
    now[0] += 61
    assert cache.get(vector, "scope") is None


@pytest.mark.unit
def test_prompt_registry_picks_by_label_and_version_and_reports_errors(tmp_path):
    reg = PromptRegistry.load()
    assert reg.resolve().ref == "grounded-answer@1"
    assert reg.resolve(label="canary").ref == "grounded-answer@2"
    assert reg.resolve(version=1).ref == "grounded-answer@1"
    for kwargs, msg in [
        ({"name": "nope"}, "unknown prompt"),
        ({"version": 9}, "no version 9"),
        ({"label": "beta"}, "no version labelled 'beta'"),
    ]:
        with pytest.raises(PromptError, match=msg):
            reg.resolve(**kwargs)
    (tmp_path / "bad.toml").write_text(
        'name = "bad"\nversion = 1\nlabels = ["production"]\n'
        'system = "{nonsense}"\nuser = "{question}"\n'
    )
    with pytest.raises(PromptError, match="does not render"):
        PromptRegistry.load(tmp_path).resolve("bad").render("q", "c")


@pytest.fixture
def client(tmp_path, broker, edge_index, dense, sparse):
    settings = make_settings(tmp_path, broker)
    seed(make_indexer(edge_index, dense, sparse))
    services = make_services(settings, edge_index, dense, sparse)
    with TestClient(create_app(services)) as c:
        yield c


@pytest.mark.broker
@pytest.mark.model
def test_answer_endpoint(client):
    r = client.post("/answer", json={"query": QUESTION}, headers=A)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["citations"][0]["doc_id"] == "runbook" and body["provider"] == "extractive"
    assert client.post("/answer", json={"query": QUESTION}, headers=A).json()["cached"] is True
    bypass = client.post("/answer", json={"query": QUESTION, "cache": False}, headers=A).json()
    assert bypass["cached"] is False and "cache_ms" not in bypass["timings"], "cache: false"
    assert client.post("/answer", json={"query": QUESTION}).status_code == 401
    canary = client.post(
        "/answer", json={"query": QUESTION, "prompt": {"label": "canary"}}, headers=A
    ).json()
    assert canary["prompt"] == "grounded-answer@2" and canary["cached"] is False
    bad = client.post("/answer", json={"query": QUESTION, "prompt": {"name": "nope"}}, headers=A)
    assert bad.status_code == 404 and "unknown prompt 'nope'" in bad.text
    assert (
        client.post(
            "/answer", json={"query": QUESTION, "filters": {"acl": "x"}}, headers=A
        ).status_code
        == 422
    )
    listed = client.get("/prompts", headers=A).json()
    assert [(p["name"], p["version"], p["labels"]) for p in listed] == [
        ("grounded-answer", 1, ["production"]),
        ("grounded-answer", 2, ["canary"]),
    ]


@pytest.mark.broker
@pytest.mark.model
def test_answer_can_ask_one_provider_of_the_chain_alone(
    tmp_path, broker, edge_index, dense, sparse
):
    """`provider` pins /answer to one chain member, no fallback: how the eval scores each."""
    server = ScriptedLLM("openai", default=("ok", "Send it SIGTERM [1].")).start()
    try:
        chain = [
            {"kind": "openai", "base_url": server.base_url, "model": "m", "retries": 0},
            {"kind": "extractive"},
        ]
        settings = make_settings(tmp_path, broker, llm_chain=chain)
        seed(make_indexer(edge_index, dense, sparse))
        with TestClient(create_app(make_services(settings, edge_index, dense, sparse))) as c:
            listed = c.get("/providers", headers=A).json()
            assert [(p["name"], p["kind"], p["model"], p["circuit"]) for p in listed] == [
                ("openai", "openai", "m", "closed"),
                ("extractive", "extractive", "extractive", "closed"),
            ]
            assert c.get("/providers").status_code == 401

            def ask_api(**extra):
                r = c.post("/answer", json={"query": QUESTION, **extra}, headers=A)
                assert r.status_code == 200, r.text
                return r.json()

            assert ask_api()["provider"] == "openai"
            calls = len(server.requests)
            pinned = ask_api(provider="extractive")
            assert pinned["provider"] == "extractive" and not pinned["cached"]
            assert [a["provider"] for a in pinned["attempts"]] == ["extractive"]
            assert len(server.requests) == calls, "the pinned request never reached openai"
            # Each provider has its own cache entries: a pinned answer is not the chain's.
            assert ask_api(provider="extractive")["cached"] is True
            assert ask_api(provider="openai")["provider"] == "openai"

            server.script = [("status", 500)]
            failed = ask_api(provider="openai", cache=False)
            assert failed["refused"] and failed["provider"] == "none", "no fallback when pinned"
            assert [(a["provider"], a["outcome"]) for a in failed["attempts"]] == [
                ("openai", "error")
            ]

            bad = c.post("/answer", json={"query": QUESTION, "provider": "gpt"}, headers=A)
            assert bad.status_code == 422
            assert bad.json()["detail"][0]["loc"] == ["body", "provider"]
            assert "no provider named 'gpt'" in bad.text and "openai, extractive" in bad.text
    finally:
        server.stop()


@pytest.mark.broker
@pytest.mark.model
def test_answer_streams_server_sent_events(client):
    with client.stream("POST", "/answer", json={"query": QUESTION, "stream": True}, headers=A) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = [block.split("\n", 1) for block in raw.strip().split("\n\n")]
    kinds = [e[0] for e in events]
    assert kinds[-1] == "event: done" and set(kinds[:-1]) == {"event: delta"}
    text = "".join(json.loads(e[1][len("data: ") :])["text"] for e in events[:-1])
    done = json.loads(events[-1][1][len("data: ") :])
    assert text == done["answer"] and done["citations"][0]["doc_id"] == "runbook"


@pytest.mark.model
def test_answer_deadline_counts_retrieval_time(index, dense, sparse, tmp_path):
    # Embedding and retrieval alone outlast a 1 µs budget: even extractive is not started.
    seed(make_indexer(index, dense, sparse))
    service = AnswerService(
        Retriever(index, dense, sparse),
        build_gateway(make_settings(tmp_path), dense),
        None,
        1500,
        deadline_s=1e-6,
    )
    with pytest.raises(DeadlineExceeded) as caught:
        ask(service, ENG)
    assert caught.value.budget_s == 1e-6 and caught.value.waited_s > 1e-6
    assert [(a["provider"], a["outcome"]) for a in caught.value.attempts] == [
        ("extractive", "deadline")
    ]


@pytest.mark.model
def test_answer_deadline_stops_a_slow_chain(edge_index, dense, sparse, tmp_path):
    server = ScriptedLLM("openai", default=("sleep", 10.0, "too late [1]")).start()
    try:
        settings = make_settings(
            tmp_path,
            llm_chain=[
                {
                    "kind": "openai",
                    "base_url": server.base_url,
                    "model": "m",
                    "timeout_s": 5,
                    "retries": 2,
                },
                {"kind": "extractive"},
            ],
        )
        seed(make_indexer(edge_index, dense, sparse))
        service = AnswerService(
            Retriever(edge_index, dense, sparse),
            build_gateway(settings, dense),
            AnswerCache(edge_index, 0.93, 3600),
            1500,
            deadline_s=1.0,
        )
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"deadline of 1\.00s: waited 1\.\d\ds") as caught:
            ask(service, ENG)
        assert time.monotonic() - started < 2.0
        assert [a["outcome"] for a in caught.value.attempts] == ["deadline", "deadline"]
        assert edge_index.cache_count() == 0  # nothing answered, nothing cached
    finally:
        server.stop()


@pytest.mark.model
def test_question_naming_what_no_source_mentions_is_refused_with_a_reason(service):
    """The runbook is retrieved (same topic), but it never mentions Kubernetes: refuse."""
    out = ask(service, ENG, "How do I stop the ingest worker cleanly on Kubernetes?")
    assert out["refused"] and out["citations"] == [] and out["provider"] == "none"
    assert "Kubernetes" in out["refusal_reason"]
    assert not ask(service, ENG, "How do I stop the ingest worker cleanly with SIGTERM?")["refused"]


@pytest.mark.model
def test_question_about_a_deleted_document_is_refused(service, index, dense, sparse):
    """The issue's case: once the only page about it is gone, the rest must not answer it."""
    make_indexer(index, dense, sparse).apply(
        [
            upsert(
                "zephyr",
                "# Zephyr Deploy Handbook\n\nZephyr ships builds nightly.",
                1,
                tenant="acme",
                acl=["eng"],
            )
        ]
    )
    question = "How often does Zephyr ship builds?"
    assert not ask(service, ENG, question)["refused"]
    make_indexer(index, dense, sparse).apply([delete("zephyr", 2, tenant="acme", acl=["eng"])])
    gone = ask(service, ENG, question, filters={"x": 1})  # a new cache scope
    assert gone["refused"] and "Zephyr" in gone["refusal_reason"]


@pytest.mark.model
def test_extractive_close_call_cites_the_better_ranked_source(dense):
    from retrieval.answer.providers import AnswerInput, ExtractiveProvider

    question = "How do I stop the ingest worker?"
    near = "To stop the ingest worker, send it SIGTERM."
    nearer = "To stop the ingest worker cleanly, send it SIGTERM."
    contexts = [near, "Unrelated pricing notes.", nearer]
    plain = ExtractiveProvider(dense, max_sentences=1, rank_bonus=0.0)
    ranked = ExtractiveProvider(dense, max_sentences=1, rank_bonus=0.06)
    inputs = AnswerInput(question, contexts, "", "")
    assert plain.complete(inputs).text.endswith("[3]")  # closest by cosine alone
    assert ranked.complete(inputs).text.endswith("[1]")  # source 1 wins the close call
