"""Grounded answers: retrieve → budget the context → prompt → gateway → check citations → cache."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from freshrag.settings import Settings
from retrieval.answer.cache import AnswerCache, cache_scope
from retrieval.answer.evidence import unsupported_names
from retrieval.answer.gateway import ChainMember, CircuitBreaker, DeadlineExceeded, Gateway
from retrieval.answer.prompts import REFUSAL, Prompt
from retrieval.answer.providers import (
    AnswerInput,
    AnthropicProvider,
    ExtractiveProvider,
    OpenAIProvider,
)
from retrieval.encoders import DenseEncoder
from retrieval.search import Grouping, Principal, Retriever
from retrieval.store.types import Condition, SearchHit, SearchMode

_DELIMITERS = re.compile(r"</?source[^>]*>", re.I)


def build_gateway(settings: Settings, encoder: DenseEncoder) -> Gateway:
    chain = []
    for spec in settings.llm_chain:
        if spec.kind == "extractive":
            provider = ExtractiveProvider(
                encoder, min_score=spec.min_score, rank_bonus=spec.rank_bonus
            )
        elif spec.kind == "openai":
            if not spec.base_url or not spec.model:
                raise ValueError("an openai provider needs base_url and model")
            provider = OpenAIProvider(
                spec.base_url, spec.model, spec.api_key, spec.timeout_s, spec.max_tokens
            )
        else:
            if not spec.model:
                raise ValueError("an anthropic provider needs model")
            provider = AnthropicProvider(
                spec.base_url or "https://api.anthropic.com",
                spec.model,
                spec.api_key,
                spec.timeout_s,
                spec.max_tokens,
            )
        if spec.name:
            provider.name = spec.name
        breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        chain.append(ChainMember(provider, spec.retries, breaker))
    return Gateway(chain)


def approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def budget_contexts(hits: list[SearchHit], max_tokens: int) -> list[SearchHit]:
    """Best hits first until the token budget is spent; the first one is cut to fit if needed."""
    kept, used = [], 0
    for hit in hits:
        cost = approx_tokens(hit.payload.get("text", ""))
        if used + cost > max_tokens:
            if not kept:
                text = hit.payload.get("text", "")[: max_tokens * 4]
                kept.append(SearchHit(hit.id, hit.score, {**hit.payload, "text": text}))
            break
        kept.append(hit)
        used += cost
    return kept


def format_contexts(hits: list[SearchHit]) -> str:
    """Numbered sources, each fenced as data; text cannot close its own fence."""
    blocks = []
    for n, h in enumerate(hits, start=1):
        p = h.payload
        text = _DELIMITERS.sub("", p.get("text", ""))
        blocks.append(
            f'[{n}] <source doc="{p.get("doc_id")}" version="{p.get("version")}">\n{text}\n</source>'
        )
    return "\n\n".join(blocks)


@dataclass
class AnswerService:
    retriever: Retriever
    gateway: Gateway
    cache: AnswerCache | None
    context_tokens: int
    # One budget per request, retrieval included: the caller waits for all of it, not per step.
    deadline_s: float = 45.0
    require_names: bool = True  # see Settings.answer_require_names
    ignore_names: frozenset[str] = frozenset()

    def answer(
        self,
        who: Principal,
        query: str,
        top_k: int,
        mode: SearchMode,
        conditions: list[Condition],
        filters: dict[str, Any],
        prompt: Prompt,
        use_cache: bool = True,
        group: Grouping = "section",
        provider: str | None = None,
    ) -> dict[str, Any]:
        """`provider`: ask only this member of the chain, no fallback (`UnknownProvider`)."""
        chain = self.gateway.signature(provider)  # raises UnknownProvider first
        timings: dict[str, float] = {}
        cache = self.cache if use_cache else None
        started = clock = time.perf_counter()
        begun = time.monotonic()
        deadline = begun + self.deadline_s

        def lap(step: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[f"{step}_ms"] = round((now - clock) * 1000, 2)
            clock = now

        vector = self.retriever.dense.encode_query(query)
        lap("embed")
        scope = cache_scope(
            tenant=who.tenant,
            groups=sorted(who.groups),
            prompt=prompt.ref,
            chain=chain,
            filters=filters,
            mode=mode,
            top_k=top_k,
            group=group,
        )
        if cache is not None:
            cached = cache.get(vector, scope)
            lap("cache")
            if cached is not None:
                timings["total_ms"] = round((time.perf_counter() - started) * 1000, 2)
                return {**cached, "cached": True, "timings": timings}
        hits = budget_contexts(
            self.retriever.retrieve(
                who, query, top_k, mode, conditions, dense_vector=vector, group=group
            ),
            self.context_tokens,
        )
        lap("retrieve")
        result: dict[str, Any]
        reason = self._refusal_reason(query, hits)
        if reason is not None:
            result = {
                "answer": REFUSAL,
                "citations": [],
                "provider": "none",
                "model": "none",
                "refused": True,
                "refusal_reason": reason,
                "attempts": [],
            }
        else:
            system, user = prompt.render(query, format_contexts(hits))
            try:
                out = self.gateway.answer(
                    AnswerInput(query, [h.payload.get("text", "") for h in hits], system, user),
                    deadline=deadline,
                    only=provider,
                )
            except DeadlineExceeded as exc:
                # Report the whole request's wait against its budget, not only the chain's.
                raise DeadlineExceeded(
                    time.monotonic() - begun, exc.attempts, self.deadline_s
                ) from exc
            lap("generate")
            result = {
                "answer": out.text,
                "citations": [_citation(n, hits[n - 1]) for n in out.citations],
                "provider": out.provider,
                "model": out.model,
                "refused": out.refused,
                "attempts": out.attempts,
            }
        result["prompt"] = prompt.ref
        if cache is not None and not result["refused"]:
            cited = {
                (h.payload["tenant"], h.payload["doc_id"]): h.payload["version"]
                for h in (hits[c["n"] - 1] for c in result["citations"])
            }
            cache.put(
                vector,
                scope,
                result,
                [{"tenant": t, "doc_id": d, "version": v} for (t, d), v in cited.items()],
            )
            lap("cache_put")
        timings["total_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return {**result, "cached": False, "timings": timings}

    def _refusal_reason(self, query: str, hits: list[SearchHit]) -> str | None:
        """Why no provider should be asked: no sources, or sources that never name the topic."""
        if not hits:
            return "no source matched the question"
        if self.require_names:
            texts = [f"{h.payload.get('title') or ''}\n{h.payload.get('text', '')}" for h in hits]
            missing = unsupported_names(query, texts, self.ignore_names)
            if missing:
                return "no source mentions " + ", ".join(f"'{m}'" for m in missing)
        return None


def _citation(n: int, hit: SearchHit) -> dict[str, Any]:
    p = hit.payload
    return {
        "n": n,
        "doc_id": p["doc_id"],
        "version": p["version"],
        "chunk_index": p.get("chunk_index"),
        "title": p.get("title"),
        "source": p.get("source"),
        "text": p.get("text", ""),
    }
