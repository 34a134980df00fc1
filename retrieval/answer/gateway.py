"""The LLM gateway: a chain of providers with retries, circuit breakers and fallback.

Each provider gets `retries` extra tries with exponential backoff on timeouts, 429 and 5xx.
A provider that keeps failing opens its circuit and is skipped for `cooldown` seconds, then
gets one trial call (half-open). An answer whose citations point outside the given sources
is rejected and the next provider asked; when none gives a grounded answer, the gateway
refuses rather than invent one.

Every provider call ends with a `Usage` record (tokens as the provider reported them,
latency, outcome) on the answer and, as it happens, to `on_usage`.

An optional deadline (a `time.monotonic()` instant) bounds the whole chain: no attempt and
no backoff sleep starts past it, each HTTP call gets at most the time left, providers left
without time are recorded with reason `deadline`, and when the deadline cut the chain short
before anyone served, `DeadlineExceeded` is raised (the API answers 504).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from freshrag import spans
from retrieval.answer.citations import CitationError, cited_sources, is_refusal
from retrieval.answer.prompts import REFUSAL
from retrieval.answer.providers import (
    AnswerInput,
    Completion,
    ExtractiveProvider,
    Provider,
    ProviderError,
    RetryableError,
    Usage,
)
from retrieval.answer.tokens import count_tokens

log = logging.getLogger("freshrag.gateway")

SERVED = Counter(
    "freshrag_answers_served_total", "Answers by the provider that served them", ["provider"]
)
SKIPPED = Counter(
    "freshrag_provider_skipped_total", "Providers passed over, and why", ["provider", "reason"]
)


class DeadlineExceeded(TimeoutError):
    """No provider served before the answer deadline; a TimeoutError so the API sends a 504."""

    def __init__(
        self, waited_s: float, attempts: list[dict[str, str]], budget_s: float | None = None
    ) -> None:
        self.waited_s, self.attempts, self.budget_s = waited_s, attempts, budget_s
        within = f" of {budget_s:.2f}s" if budget_s is not None else ""
        tried = "; ".join(f"{a['provider']} ({a['outcome']}: {a['detail']})" for a in attempts)
        super().__init__(
            f"no answer before the deadline{within}: waited {waited_s:.2f}s; "
            f"providers: {tried or 'none'}"
        )


class UnknownProvider(ValueError):
    """A request named a provider that is not in the configured chain."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(
            f"no provider named {name!r} in the answer chain; configured: {', '.join(known)}"
        )


class OutOfTime(ProviderError):
    """A provider's turn ended for lack of time; `failed` says whether it had failed a call."""

    def __init__(self, detail: str, failed: bool) -> None:
        super().__init__(detail)
        self.failed = failed


class StopBeforeDeadline(stop_base):
    """Stops retrying when the next backoff sleep would end at or past the deadline.

    Computes the sleep from the wait strategy itself (tenacity < 8.3 has no `upcoming_sleep`),
    and remembers whether it fired so the gateway can tell a deadline from exhausted retries.
    """

    def __init__(self, deadline: float, wait: wait_base) -> None:
        self.deadline, self.wait = deadline, wait
        self.fired = False

    def __call__(self, retry_state: RetryCallState) -> bool:
        if time.monotonic() + self.wait(retry_state) >= self.deadline:
            self.fired = True
        return self.fired


class CircuitBreaker:
    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures, self.cooldown, self.clock = failures, cooldown, clock
        self.consecutive = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        self.consecutive, self.opened_at = 0, None

    def failure(self) -> None:
        self.consecutive += 1
        if self.state == "half-open" or self.consecutive >= self.failures:
            self.opened_at = self.clock()


@dataclass(slots=True)
class ChainMember:
    provider: Provider
    retries: int = 2
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(3, 30.0))


@dataclass(slots=True)
class GatewayAnswer:
    text: str
    citations: list[int]
    provider: str
    model: str
    refused: bool
    attempts: list[dict[str, str]]
    # One record per provider call (retries included), in order: tokens, latency, outcome.
    usage: list[Usage] = field(default_factory=list)


@dataclass(slots=True)
class Run:
    """One pass down the chain: what was tried and what each call cost, so far."""

    started: float = field(default_factory=time.monotonic)
    attempts: list[dict[str, str]] = field(default_factory=list)
    usage: list[Usage] = field(default_factory=list)
    out_of_time: bool = False


class Gateway:
    """The chain and its policy. `answer` asks it for a whole answer; the streamed chain
    (retrieval/answer/streaming.py) keeps the same policy through the methods below."""

    def __init__(
        self,
        chain: list[ChainMember],
        backoff: float = 0.2,
        on_usage: Callable[[Usage], None] | None = None,
    ) -> None:
        if not chain:
            raise ValueError("the provider chain is empty")
        self.chain = chain
        self.backoff = backoff
        # Sees every provider call as it ends, a cancelled one too (budgets, cost metrics).
        self.on_usage = on_usage

    def signature(self, only: str | None = None) -> str:
        """The chain asked (whole, or the member `only`), for cache scopes."""
        return ">".join(m.provider.name for m in self.members(only))

    @property
    def names(self) -> list[str]:
        return [m.provider.name for m in self.chain]

    def answer(
        self, request: AnswerInput, deadline: float | None = None, only: str | None = None
    ) -> GatewayAnswer:
        """Asks the chain in order; `deadline` is a `time.monotonic()` instant bounding it all.

        `only` names one provider of the chain to ask alone, with no fallback (evaluations
        score each provider this way); an unknown name raises `UnknownProvider`.

        Raises `DeadlineExceeded` when the deadline cut the chain short (an attempt timed out
        on it, a retry or a provider was given up for lack of time) and nobody served.
        """
        run = Run()
        for member in self.members(only):
            name = member.provider.name
            if not self.admit(member, deadline, run):
                continue
            try:
                completion = self._call(member, request, deadline, run)
            except OutOfTime as exc:
                self.out_of_time(member, exc, run)
                continue
            except ProviderError as exc:
                member.breaker.failure()
                self.skip(run, name, "error", str(exc))
                continue
            member.breaker.success()
            served = self.verdict(name, completion.text, completion.model, request, run)
            if served is not None:
                return served
        return self.nobody(run)

    def members(self, only: str | None = None) -> list[ChainMember]:
        """The whole chain, or just the member named `only`."""
        if only is None:
            return self.chain
        picked = [m for m in self.chain if m.provider.name == only]
        if not picked:
            raise UnknownProvider(only, self.names)
        return picked

    # --- the policy both the whole and the streamed chain follow ----------------------

    def admit(self, member: ChainMember, deadline: float | None, run: Run) -> bool:
        """Whether `member` gets its turn now; records why not."""
        name = member.provider.name
        if deadline is not None and time.monotonic() >= deadline:
            # Even the local extractive provider: past the deadline the caller has gone.
            self.skip(run, name, "deadline", "not tried: the deadline had passed")
            run.out_of_time = True
            return False
        if not member.breaker.allow():
            self.skip(run, name, "circuit_open", "circuit open after repeated failures")
            return False
        return True

    def out_of_time(self, member: ChainMember, exc: OutOfTime, run: Run) -> None:
        if exc.failed:
            member.breaker.failure()
        self.skip(run, member.provider.name, "deadline", str(exc))
        run.out_of_time = True

    def verdict(
        self, name: str, text: str, model: str, request: AnswerInput, run: Run
    ) -> GatewayAnswer | None:
        """The served answer (a grounded one or the model's refusal), or None when its
        citations fail (recorded; the next provider is asked)."""
        if is_refusal(text):
            run.attempts.append(
                {"provider": name, "outcome": "served", "detail": "refused: sources do not say"}
            )
            SERVED.labels(name).inc()
            return GatewayAnswer(REFUSAL, [], name, model, True, run.attempts, run.usage)
        try:
            citations = cited_sources(text, len(request.contexts))
        except CitationError as exc:
            self.skip(run, name, "invalid_citations", str(exc))
            return None
        run.attempts.append({"provider": name, "outcome": "served", "detail": ""})
        SERVED.labels(name).inc()
        return GatewayAnswer(text, citations, name, model, False, run.attempts, run.usage)

    def nobody(self, run: Run) -> GatewayAnswer:
        """Nobody served: a 504 when the deadline cut the chain short, else the refusal."""
        if run.out_of_time:
            raise DeadlineExceeded(time.monotonic() - run.started, run.attempts)
        SERVED.labels("none").inc()
        return GatewayAnswer(REFUSAL, [], "none", "none", True, run.attempts, run.usage)

    def retry_policy(
        self, member: ChainMember, deadline: float | None
    ) -> tuple[dict[str, Any], StopBeforeDeadline | None]:
        """Tenacity's arguments for one provider's turn, and the stop that watches the deadline."""
        wait = wait_exponential(multiplier=self.backoff, max=5)
        stop: stop_base = stop_after_attempt(member.retries + 1)
        at_deadline = None
        if deadline is not None:
            # Attempts first: `fired` then means a retry was due but there was no time for it.
            at_deadline = StopBeforeDeadline(deadline, wait)
            stop = stop | at_deadline
        policy = {
            "stop": stop,
            "wait": wait,
            "retry": retry_if_exception_type(RetryableError),
            "reraise": True,
        }
        return policy, at_deadline

    @staticmethod
    def stopped_by_deadline(
        exc: RetryableError, at_deadline: StopBeforeDeadline | None, deadline: float | None
    ) -> OutOfTime | None:
        """A turn's last retryable error as lack of time, when the deadline stopped the retries."""
        if deadline is None or at_deadline is None:
            return None
        if at_deadline.fired or time.monotonic() >= deadline:
            return OutOfTime(f"{exc}; stopped at the deadline", failed=True)
        return None

    def record(self, run: Run, usage: Usage) -> None:
        run.usage.append(usage)
        if spans.enabled():
            attempt = sum(1 for u in run.usage if u.provider == usage.provider)
            spans.record(
                "llm.attempt",
                usage.latency_ms / 1000,
                _attempt(usage, attempt),
                failed=usage.outcome in ("error", "deadline"),
            )
        if self.on_usage is not None:
            try:
                self.on_usage(usage)
            except Exception:  # a broken consumer must not fail the answer
                log.exception("on_usage failed for %s", usage.provider)

    @staticmethod
    def skip(run: Run, name: str, reason: str, detail: str) -> None:
        log.warning("provider %s skipped (%s): %s", name, reason, detail)
        # The reason only: a detail may quote what the provider sent back.
        spans.event("provider skipped", {"freshrag.provider": name, "freshrag.reason": reason})
        SKIPPED.labels(name, reason).inc()
        run.attempts.append({"provider": name, "outcome": reason, "detail": detail})

    # --- the whole answer -----------------------------------------------------------

    def _call(
        self, member: ChainMember, request: AnswerInput, deadline: float | None, run: Run
    ) -> Completion:
        """One provider's turn: retries with backoff, all of it inside the deadline."""
        provider = member.provider
        policy, at_deadline = self.retry_policy(member, deadline)
        tried = 0

        def attempt() -> Completion:
            nonlocal tried
            left = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    why = "no time left to retry" if tried else "not tried: the deadline had passed"
                    raise OutOfTime(why, failed=tried > 0)
            tried += 1
            began = time.perf_counter()
            try:
                completion = provider.complete(request, left)
            except ProviderError:
                self.record(run, call_usage(provider, began, "error"))
                raise
            self.record(
                run,
                call_usage(
                    provider,
                    began,
                    "ok",
                    completion.model,
                    completion.input_tokens,
                    completion.output_tokens,
                    prompt=prompt_text(request),
                    text=completion.text,
                ),
            )
            return completion

        try:
            return Retrying(**policy)(attempt)
        except RetryableError as exc:
            out_of_time = self.stopped_by_deadline(exc, at_deadline, deadline)
            if out_of_time is None:
                raise
            raise out_of_time from exc


def call_usage(
    provider: Provider,
    began: float,
    outcome: str,
    model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    first_token: float | None = None,
    prompt: str | None = None,
    text: str | None = None,
) -> Usage:
    """The usage record of a call that began at `began` (`time.perf_counter()`) and ends now.

    A remote provider that answered (or streamed some text) without usage fields still
    billed tokens: they are counted from `prompt` and `text` and marked `estimated`.
    """
    now = time.perf_counter()
    estimated = False
    remote = not isinstance(provider, ExtractiveProvider)
    if remote and prompt is not None and (input_tokens is None or output_tokens is None):
        estimated = True
        if input_tokens is None:
            input_tokens = count_tokens(prompt)
        if output_tokens is None:
            output_tokens = count_tokens(text or "")
    return Usage(
        provider=provider.name,
        model=model or str(getattr(provider, "model", provider.name)),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=round((now - began) * 1000, 2),
        outcome=outcome,
        first_token_ms=None if first_token is None else round((first_token - began) * 1000, 2),
        estimated=estimated,
    )


def _attempt(usage: Usage, n: int) -> dict[str, spans.AttributeValue]:
    """An `llm.attempt` span's attributes: who, which call, how it ended, tokens; no text."""
    attributes: dict[str, spans.AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": usage.model,
        "freshrag.provider": usage.provider,
        "freshrag.provider.attempt": n,
        "freshrag.provider.outcome": usage.outcome,
    }
    if usage.input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
    if usage.output_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
        attributes["freshrag.provider.tokens_estimated"] = usage.estimated
    if usage.first_token_ms is not None:
        attributes["freshrag.provider.first_token_ms"] = usage.first_token_ms
    return attributes


def prompt_text(request: AnswerInput) -> str:
    """What the provider was sent, for counting its tokens when it does not say."""
    return f"{request.system}\n{request.user}"
