"""Grounded answers: retrieve → budget the context → prompt → gateway → check citations → cache.

Whole (`answer`, for JSON) or streamed (`prepare` off the event loop, then `stream` on it,
for Server-Sent Events): the same steps, cache and deadline either way.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from typing import Any

from freshrag import spans
from freshrag.settings import Settings
from retrieval.answer.cache import AnswerCache, cache_scope
from retrieval.answer.evidence import unsupported_names
from retrieval.answer.gateway import (
    ChainMember,
    CircuitBreaker,
    DeadlineExceeded,
    Gateway,
    GatewayAnswer,
)
from retrieval.answer.prompts import REFUSAL, Prompt
from retrieval.answer.providers import (
    AnswerInput,
    AnthropicProvider,
    ExtractiveProvider,
    OpenAIProvider,
    in_thread,
)
from retrieval.answer.streaming import Delta, Reset, RunSync, stream_answer
from retrieval.encoders import DenseEncoder
from retrieval.search import Grouping, Principal, Retriever
from retrieval.stages import Stages
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


class _Clock:
    """Per-step timings of one request, in milliseconds."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[f"{step}_ms"] = round((now - self.last) * 1000, 2)
        self.last = now

    def mark(self, name: str) -> None:
        """A moment since the start (e.g. the first token), leaving the laps alone."""
        self.timings.setdefault(f"{name}_ms", round((time.perf_counter() - self.started) * 1000, 2))

    def total(self) -> dict[str, float]:
        self.timings["total_ms"] = round((time.perf_counter() - self.started) * 1000, 2)
        return self.timings


@dataclass
class Prepared:
    """A request up to its provider call: settled already (a cache hit, a refusal before
    any provider) or the gateway's input. `AnswerService.prepare` makes it (blocking work:
    embedding, cache, retrieval); `answer` and `stream` finish it."""

    clock: _Clock
    begun: float  # time.monotonic() at the start: the deadline counts from here
    deadline: float
    prompt: str
    provider: str | None  # the one chain member asked, if any
    settled: dict[str, Any] | None = None
    request: AnswerInput | None = None
    hits: list[SearchHit] = field(default_factory=list)
    vector: Any = None
    scope: str = ""
    cache: AnswerCache | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The streamed answer's end: the same result `AnswerService.answer` returns."""

    result: dict[str, Any]


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
        stages: Stages | None = None,
    ) -> dict[str, Any]:
        """`provider`: ask only this member of the chain, no fallback (`UnknownProvider`);
        `stages`: the request's ranking choices."""
        ready = self.prepare(
            who, query, top_k, mode, conditions, filters, prompt, use_cache, group, provider, stages
        )
        if ready.settled is not None:
            return self._settle(ready)
        assert ready.request is not None
        try:
            out = self.gateway.answer(ready.request, deadline=ready.deadline, only=provider)
        except DeadlineExceeded as exc:
            raise self._late(ready, exc) from exc
        return self.finish(ready, out)

    def prepare(
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
        stages: Stages | None = None,
    ) -> Prepared:
        """Everything before the provider call: embed, look up the cache, retrieve, decide
        whether to ask at all, render the prompt. Blocking: run it off the event loop."""
        chain = self.gateway.signature(provider)  # raises UnknownProvider first
        cache = self.cache if use_cache else None
        clock = _Clock()
        begun = time.monotonic()
        ready = Prepared(clock, begun, begun + self.deadline_s, prompt.ref, provider, cache=cache)
        ready.vector = self.retriever.dense.encode_query(query)
        clock.lap("embed")
        ready.scope = cache_scope(
            tenant=who.tenant,
            groups=sorted(who.groups),
            prompt=prompt.ref,
            chain=chain,
            filters=filters,
            mode=mode,
            top_k=top_k,
            group=group,
            # Only when asked: a request at the defaults keeps the scope it always had.
            **({"stages": stages.asked()} if stages is not None and stages.asked() else {}),
        )
        if cache is not None:
            with spans.span("answer.cache.lookup") as span:
                cached = cache.get(ready.vector, ready.scope)
                span.set_attribute("freshrag.cache.hit", cached is not None)
            clock.lap("cache")
            if cached is not None:
                ready.settled = {**cached, "cached": True}
                return ready
        ready.hits = budget_contexts(
            self.retriever.retrieve(
                who,
                query,
                top_k,
                mode,
                conditions,
                dense_vector=ready.vector,
                group=group,
                stages=stages,
                deadline=ready.deadline,
                timings=clock.timings,
            ),
            self.context_tokens,
        )
        clock.lap("retrieve")
        reason = self._refusal_reason(query, ready.hits)
        if reason is not None:
            ready.settled = {
                "answer": REFUSAL,
                "citations": [],
                "provider": "none",
                "model": "none",
                "refused": True,
                "refusal_reason": reason,
                "attempts": [],
                "prompt": prompt.ref,
                "cached": False,
            }
            return ready
        system, user = prompt.render(query, format_contexts(ready.hits))
        texts = [h.payload.get("text", "") for h in ready.hits]
        ready.request = AnswerInput(query, texts, system, user)
        return ready

    def finish(self, ready: Prepared, out: GatewayAnswer) -> dict[str, Any]:
        """The gateway's answer as the response: citations resolved to chunks, cached when
        grounded. Blocking (the cache write)."""
        ready.clock.lap("generate")
        result: dict[str, Any] = {
            "answer": out.text,
            "citations": [_citation(n, ready.hits[n - 1]) for n in out.citations],
            "provider": out.provider,
            "model": out.model,
            "refused": out.refused,
            "attempts": out.attempts,
            "prompt": ready.prompt,
        }
        if ready.cache is not None and not result["refused"]:
            cited = {
                (h.payload["tenant"], h.payload["doc_id"]): h.payload["version"]
                for h in (ready.hits[c["n"] - 1] for c in result["citations"])
            }
            # What a hit on this entry saves: the tokens the calls that made it billed.
            spent = {
                "input_tokens": sum(u.input_tokens or 0 for u in out.usage),
                "output_tokens": sum(u.output_tokens or 0 for u in out.usage),
            }
            with spans.span("answer.cache.store"):
                ready.cache.put(
                    ready.vector,
                    ready.scope,
                    {**result, "tokens": spent},
                    [{"tenant": t, "doc_id": d, "version": v} for (t, d), v in cited.items()],
                )
            ready.clock.lap("cache_put")
        # Not cached (a cache hit costs nothing) and not in the response (yet): the calls'
        # tokens and latency, for whoever budgets or bills them.
        usage = [asdict(u) for u in out.usage]
        return {**result, "cached": False, "timings": ready.clock.total(), "usage": usage}

    async def stream(
        self, ready: Prepared, run_sync: RunSync = in_thread
    ) -> AsyncGenerator[Delta | Reset | Done, None]:
        """`answer`, streamed: `Delta`s and `Reset`s as the chain produces them, then `Done`.

        A settled request (cache hit, refusal before asking) streams at once: its whole text
        in one delta. `run_sync` runs the blocking steps (extractive encoder, cache write);
        the API passes its answer lane. Raises `DeadlineExceeded` as `answer` does.
        """
        if ready.settled is not None:
            ready.clock.mark("first_token")
            yield Delta(ready.settled["answer"])
            yield Done(self._settle(ready))
            return
        assert ready.request is not None
        events = stream_answer(
            self.gateway, ready.request, ready.deadline, ready.provider, run_sync
        )
        try:
            async with aclosing(events):
                async for event in events:
                    if isinstance(event, GatewayAnswer):
                        yield Done(await run_sync(self.finish, ready, event))
                        return
                    if isinstance(event, Delta):
                        ready.clock.mark("first_token")
                    yield event
        except DeadlineExceeded as exc:
            raise self._late(ready, exc) from exc

    def _settle(self, ready: Prepared) -> dict[str, Any]:
        assert ready.settled is not None
        return {**ready.settled, "prompt": ready.prompt, "timings": ready.clock.total()}

    def _late(self, ready: Prepared, exc: DeadlineExceeded) -> DeadlineExceeded:
        """Reports the whole request's wait against its budget, not only the chain's."""
        return DeadlineExceeded(time.monotonic() - ready.begun, exc.attempts, self.deadline_s)

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
