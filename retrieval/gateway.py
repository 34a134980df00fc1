"""The LLM gateway: a chain of providers with retries, circuit breakers and fallback.

Each provider gets `retries` extra tries with exponential backoff on timeouts, 429 and 5xx.
A provider that keeps failing opens its circuit and is skipped for `cooldown` seconds, then
gets one trial call (half-open). An answer whose citations point outside the given sources
is rejected and the next provider asked; when none gives a grounded answer, the gateway
refuses rather than invent one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from retrieval.citations import CitationError, cited_sources, is_refusal
from retrieval.prompts import REFUSAL
from retrieval.providers import AnswerInput, Provider, ProviderError, RetryableError

log = logging.getLogger("freshrag.gateway")

SERVED = Counter(
    "freshrag_answers_served_total", "Answers by the provider that served them", ["provider"]
)
SKIPPED = Counter(
    "freshrag_provider_skipped_total", "Providers passed over, and why", ["provider", "reason"]
)


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


class Gateway:
    def __init__(self, chain: list[ChainMember], backoff: float = 0.2) -> None:
        if not chain:
            raise ValueError("the provider chain is empty")
        self.chain = chain
        self.backoff = backoff

    @property
    def signature(self) -> str:
        return ">".join(m.provider.name for m in self.chain)

    def answer(self, request: AnswerInput) -> GatewayAnswer:
        attempts: list[dict[str, str]] = []
        for member in self.chain:
            name = member.provider.name
            if not member.breaker.allow():
                self._skip(attempts, name, "circuit_open", "circuit open after repeated failures")
                continue
            try:
                completion = self._call(member, request)
            except ProviderError as exc:
                member.breaker.failure()
                self._skip(attempts, name, "error", str(exc))
                continue
            member.breaker.success()
            if is_refusal(completion.text):
                attempts.append(
                    {"provider": name, "outcome": "served", "detail": "refused: sources do not say"}
                )
                SERVED.labels(name).inc()
                return GatewayAnswer(REFUSAL, [], name, completion.model, True, attempts)
            try:
                citations = cited_sources(completion.text, len(request.contexts))
            except CitationError as exc:
                self._skip(attempts, name, "invalid_citations", str(exc))
                continue
            attempts.append({"provider": name, "outcome": "served", "detail": ""})
            SERVED.labels(name).inc()
            return GatewayAnswer(
                completion.text, citations, name, completion.model, False, attempts
            )
        SERVED.labels("none").inc()
        return GatewayAnswer(REFUSAL, [], "none", "none", True, attempts)

    def _call(self, member: ChainMember, request: AnswerInput):  # noqa: ANN202
        retrying = Retrying(
            stop=stop_after_attempt(member.retries + 1),
            wait=wait_exponential(multiplier=self.backoff, max=5),
            retry=retry_if_exception_type(RetryableError),
            reraise=True,
        )
        return retrying(member.provider.complete, request)

    @staticmethod
    def _skip(attempts: list[dict[str, str]], name: str, reason: str, detail: str) -> None:
        log.warning("provider %s skipped (%s): %s", name, reason, detail)
        SKIPPED.labels(name, reason).inc()
        attempts.append({"provider": name, "outcome": reason, "detail": detail})
