"""Answer providers: extractive (offline, deterministic), OpenAI-compatible and Anthropic.

Each provider turns (question, numbered contexts, rendered prompt) into answer text with
[n] citations. HTTP providers raise `RetryableError` for what a retry may fix (timeouts,
429, 5xx) and `ProviderError` for what it will not (4xx, malformed bodies). A call may be
given a `timeout` shorter than the provider's own: the gateway passes what is left of the
answer deadline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import httpx
import numpy as np

from retrieval.answer.prompts import REFUSAL
from retrieval.encoders import DenseEncoder


class ProviderError(RuntimeError):
    """The provider failed in a way a retry will not fix."""


class RetryableError(ProviderError):
    """Timeout, rate limit or server error: worth another try after a pause."""


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str


@dataclass(frozen=True, slots=True)
class AnswerInput:
    question: str
    contexts: list[str]  # numbered 1..n in the prompt
    system: str
    user: str


class Provider(Protocol):
    name: str

    def complete(self, request: AnswerInput, timeout: float | None = None) -> Completion:
        """`timeout` caps this one call (seconds); None means the provider's own."""
        ...


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(])")


def split_sentences(text: str) -> list[str]:
    cleaned = re.sub(r"^#+\s.*$", "", text, flags=re.M)  # section headings are not claims
    return [s.strip() for s in _SENTENCE.split(" ".join(cleaned.split())) if len(s.strip()) > 20]


class ExtractiveProvider:
    """Picks the retrieved sentences closest to the question and cites each; no LLM.

    Grounded by construction: every sentence comes from a numbered context, and text in the
    contexts is only ever quoted, never followed.
    """

    name = "extractive"

    def __init__(
        self,
        encoder: DenseEncoder,
        max_sentences: int = 3,
        min_score: float = 0.3,
        rank_bonus: float = 0.06,
    ) -> None:
        self.encoder = encoder
        self.max_sentences = max_sentences
        self.min_score = min_score
        self.rank_bonus = rank_bonus

    def complete(self, request: AnswerInput, timeout: float | None = None) -> Completion:
        """Local and fast, so `timeout` is not needed; the gateway checks the deadline first."""
        candidates = [
            (i + 1, s) for i, ctx in enumerate(request.contexts) for s in split_sentences(ctx)
        ]
        if not candidates:
            return Completion(REFUSAL, self.name)
        vectors = np.asarray(self.encoder.encode([request.question] + [s for _, s in candidates]))
        scores = vectors[1:] @ vectors[0]
        # Retrieval's order is evidence too: a sentence of source 1 gets `rank_bonus` over
        # one of the last source, so a close call cites the better-ranked source. On the
        # dev set this took answers citing a gold page from 0.79 to 0.81 and the share of
        # citations on gold pages from 0.65 to 0.69.
        n = len(request.contexts)
        prior = [self.rank_bonus * (n - src) / max(1, n - 1) for src, _ in candidates]
        ranked = sorted(range(len(candidates)), key=lambda k: (-(scores[k] + prior[k]), k))
        chosen = [k for k in ranked[: self.max_sentences] if scores[k] >= self.min_score]
        if not chosen:
            return Completion(REFUSAL, self.name)
        chosen.sort()  # reading order: by source, then position
        return Completion(
            " ".join(f"{candidates[k][1]} [{candidates[k][0]}]" for k in chosen), self.name
        )


def _raise_for(response: httpx.Response, provider: str) -> None:
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(f"{provider}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise ProviderError(f"{provider}: HTTP {response.status_code}: {response.text[:200]}")


class _HttpProvider:
    name = "http"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float,
        max_tokens: int = 512,
        name: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.name = name or self.name
        self._client = httpx.Client(timeout=timeout)

    def _post(
        self, path: str, body: dict, headers: dict[str, str], timeout: float | None = None
    ) -> dict:
        # Never wait longer than the provider's own timeout, nor past the caller's deadline.
        limit = self.timeout if timeout is None else min(self.timeout, timeout)
        try:
            response = self._client.post(
                self.base_url + path, json=body, headers=headers, timeout=limit
            )
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{self.name}: timed out after {limit:.2f}s") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        _raise_for(response, self.name)
        try:
            data = response.json()
        except ValueError as exc:
            raise ProviderError(f"{self.name}: response is not JSON") from exc
        if not isinstance(data, dict):
            raise ProviderError(f"{self.name}: response is not a JSON object")
        return data


class OpenAIProvider(_HttpProvider):
    """Any OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, llama.cpp server, Ollama."""

    name = "openai"

    def complete(self, request: AnswerInput, timeout: float | None = None) -> Completion:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        data = self._post(
            "/chat/completions",
            {
                "model": self.model,
                "temperature": 0,
                "max_tokens": self.max_tokens,
                "messages": [
                    {"role": "system", "content": request.system},
                    {"role": "user", "content": request.user},
                ],
            },
            headers,
            timeout,
        )
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError(f"{self.name}: malformed chat-completions body") from exc
        if not isinstance(text, str) or not text.strip():
            raise ProviderError(f"{self.name}: empty answer")
        return Completion(text.strip(), str(data.get("model") or self.model))


class AnthropicProvider(_HttpProvider):
    """Anthropic's Messages API."""

    name = "anthropic"

    def complete(self, request: AnswerInput, timeout: float | None = None) -> Completion:
        headers = {"x-api-key": self.api_key or "", "anthropic-version": "2023-06-01"}
        data = self._post(
            "/v1/messages",
            {
                "model": self.model,
                "max_tokens": self.max_tokens,
                "temperature": 0,
                "system": request.system,
                "messages": [{"role": "user", "content": request.user}],
            },
            headers,
            timeout,
        )
        try:
            text = "".join(b["text"] for b in data["content"] if b.get("type") == "text")
        except (KeyError, TypeError) as exc:
            raise ProviderError(f"{self.name}: malformed messages body") from exc
        if not text.strip():
            raise ProviderError(f"{self.name}: empty answer")
        return Completion(text.strip(), str(data.get("model") or self.model))
