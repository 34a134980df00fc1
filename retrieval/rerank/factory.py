"""The reranker FRESHRAG_RERANKER names, built once per process by the wiring."""

from __future__ import annotations

from freshrag.settings import Settings
from retrieval.answer.gateway import Gateway
from retrieval.rerank.base import Reranker
from retrieval.rerank.cross_encoder import CrossEncoderReranker
from retrieval.rerank.llm import LlmReranker

CROSS_ENCODER = "cross-encoder:"
# The LLM reranker's characters of each candidate per FRESHRAG_RERANK_MAX_TOKENS token.
_LLM_CHARS_PER_TOKEN = 4


def build_reranker(settings: Settings, gateway: Gateway | None) -> Reranker | None:
    """None for `none`; a cross-encoder loaded from its folder; the LLM reranker on
    `gateway` (the answer chain's). ValueError when the setting cannot be served."""
    spec = settings.reranker
    if spec == "none":
        return None
    if spec.startswith(CROSS_ENCODER):
        folder = spec.removeprefix(CROSS_ENCODER)
        return CrossEncoderReranker(folder, settings.rerank_max_tokens, settings.rerank_threads)
    if spec == "llm":
        if gateway is None:
            raise ValueError("FRESHRAG_RERANKER=llm needs the answer chain")
        chars = settings.rerank_max_tokens * _LLM_CHARS_PER_TOKEN
        return LlmReranker(gateway, chars, settings.rerank_timeout_s)
    raise ValueError(f"FRESHRAG_RERANKER: unknown reranker {spec!r}")
