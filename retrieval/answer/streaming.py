"""The provider chain, streamed: each provider's text reaches the caller as it is produced.

The same chain, breaker, retries, deadline and citation rules as `Gateway.answer` (through
the gateway's policy methods). What streaming changes:

- A provider is retried (with backoff, inside the deadline) only until its first text;
  once text has gone out, a failure ends its turn.
- Citations are checked as the text arrives (`citations.check_partial`): a citation
  outside the sources stops the provider at once, and the text carrying it never goes
  out. Whether the answer cites anything at all is checked at its end.
- A turn that fails after some of its text went out (a bad citation, an error mid-stream,
  the deadline) is followed by a `Reset`: discard what you received. The next provider
  then streams its answer, or the refusal comes.
- The last event is the `GatewayAnswer`, as `Gateway.answer` returns it; when the
  deadline cut the chain short and nobody served, `DeadlineExceeded` is raised instead.
- Closing the iteration early (a client that left) or cancelling it ends the provider
  call: its HTTP stream is closed at once.

Text is trimmed on the way (no leading blanks; trailing ones wait for more text), so the
deltas after the last `Reset` add up to the final answer's text; a refusal is restated
there in the canonical words.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
from tenacity import AsyncRetrying

from retrieval.answer.citations import CitationError, check_partial
from retrieval.answer.gateway import (
    ChainMember,
    Gateway,
    GatewayAnswer,
    OutOfTime,
    Run,
    call_usage,
    prompt_text,
)
from retrieval.answer.providers import (
    AnswerInput,
    ProviderError,
    RetryableError,
    StreamCall,
    in_thread,
)

RunSync = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Delta:
    """More answer text from the provider whose turn it is."""

    text: str


@dataclass(frozen=True, slots=True)
class Reset:
    """Discard the text received since the last reset: `provider`'s answer was rejected."""

    provider: str
    reason: str  # invalid_citations, error or deadline: as in the answer's `attempts`
    detail: str


StreamEvent = Delta | Reset | GatewayAnswer


async def stream_answer(
    gateway: Gateway,
    request: AnswerInput,
    deadline: float | None = None,
    only: str | None = None,
    run_sync: RunSync = in_thread,
) -> AsyncGenerator[StreamEvent, None]:
    """`Gateway.answer`, streamed: `Delta`s and `Reset`s, then the `GatewayAnswer`.

    `run_sync(fn, *args)` runs blocking provider work (the extractive encoder) off the
    event loop.
    """
    run = Run()
    for member in gateway.members(only):
        name = member.provider.name
        if not gateway.admit(member, deadline, run):
            continue
        turn = _Turn(gateway, member, request, deadline, run, run_sync)
        try:
            async with aclosing(turn.deltas()) as deltas:
                async for text in deltas:
                    yield Delta(text)
        except OutOfTime as exc:
            gateway.out_of_time(member, exc, run)
        except CitationError as exc:  # the provider works; its answer does not
            member.breaker.success()
            gateway.skip(run, name, "invalid_citations", str(exc))
        except ProviderError as exc:
            member.breaker.failure()
            gateway.skip(run, name, "error", str(exc))
        else:
            member.breaker.success()
            served = gateway.verdict(name, turn.sent, turn.model, request, run)
            if served is not None:
                yield served
                return
        if turn.sent:
            last = run.attempts[-1]
            yield Reset(name, last["outcome"], last["detail"])
    yield gateway.nobody(run)


def _outcome(exc: BaseException) -> str:
    """How a streamed call ended, for its usage record."""
    if isinstance(exc, CitationError):
        return "stopped"
    if isinstance(exc, OutOfTime | TimeoutError):
        return "deadline"
    if isinstance(exc, Exception):
        return "error"
    return "cancelled"  # the caller left: cancellation, or the iteration closed


class _Turn:
    """One provider's turn: opened with retries, read under the deadline, checked as it goes."""

    def __init__(
        self,
        gateway: Gateway,
        member: ChainMember,
        request: AnswerInput,
        deadline: float | None,
        run: Run,
        run_sync: RunSync,
    ) -> None:
        self.gateway, self.member, self.request = gateway, member, request
        self.deadline, self.run, self.run_sync = deadline, run, run_sync
        self.name = member.provider.name
        self.model = str(getattr(member.provider, "model", self.name))
        self.received = ""  # every piece of text, as the provider sent it
        self.sent = ""  # what went out: `received` without its outer blanks
        self._held = ""  # blanks that go out only if more text follows
        self._tried = 0

    async def deltas(self) -> AsyncGenerator[str, None]:
        """The provider's text, checked and trimmed; raises what ends the turn early."""
        chunks, call, began, first_at, text = await self._open()
        outcome = "ok"
        try:
            async with aclosing(chunks):
                piece: str | None = text
                while piece is not None:
                    self.received += piece
                    check_partial(self.received, len(self.request.contexts))
                    out = self._trim(piece)
                    if out:
                        self.sent += out
                        yield out
                    piece = await self._next(chunks)
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            self.model = call.model or self.model
            self._record(call, began, outcome, first_at)

    async def _open(self) -> tuple[AsyncGenerator[str, None], StreamCall, float, float, str]:
        """Retries (inside the deadline) until the provider's first text."""
        policy, at_deadline = self.gateway.retry_policy(self.member, self.deadline)
        try:
            return await AsyncRetrying(**policy)(self._attempt)
        except RetryableError as exc:
            out_of_time = self.gateway.stopped_by_deadline(exc, at_deadline, self.deadline)
            if out_of_time is None:
                raise
            raise out_of_time from exc

    async def _attempt(self) -> tuple[AsyncGenerator[str, None], StreamCall, float, float, str]:
        """One call up to its first text: (the open stream, the call, began, first text at,
        the text). A call that fails before it is recorded here; one that got that far, by
        `deltas`."""
        left = None
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                tried = self._tried > 0
                why = "no time left to retry" if tried else "not tried: the deadline had passed"
                raise OutOfTime(why, failed=tried)
        self._tried += 1
        call = StreamCall(left, self.run_sync)
        began = time.perf_counter()
        chunks = self.member.provider.stream(self.request, call)
        try:
            # The provider's own timeout bounds each read; this bounds them all together.
            with anyio.fail_after(left):
                async for text in chunks:
                    if text.strip():
                        return chunks, call, began, time.perf_counter(), text
            raise ProviderError(f"{self.name}: empty answer")
        except BaseException as exc:
            await chunks.aclose()
            self._record(call, began, _outcome(exc), None)
            if isinstance(exc, TimeoutError) and left is not None:
                raise RetryableError(f"{self.name}: timed out after {left:.2f}s") from exc
            raise

    def _record(self, call: StreamCall, began: float, outcome: str, first_at: float | None) -> None:
        usage = call_usage(
            self.member.provider,
            began,
            outcome,
            call.model,
            call.input_tokens,
            call.output_tokens,
            first_at,
            # A call that got no text out (failed before its first) is not counted.
            prompt=prompt_text(self.request) if first_at is not None else None,
            text=self.received,
        )
        self.gateway.record(self.run, usage)

    async def _next(self, chunks: AsyncGenerator[str, None]) -> str | None:
        """The next piece of text, None at the end; the deadline bounds the wait."""
        if self.deadline is None:
            return await anext(chunks, None)
        try:
            with anyio.fail_after(max(0.0, self.deadline - time.monotonic())):
                return await anext(chunks, None)
        except TimeoutError as exc:
            raise OutOfTime(
                f"{self.name}: the deadline passed in the middle of its answer", failed=True
            ) from exc

    def _trim(self, piece: str) -> str:
        """What of `piece` goes out now: no leading blanks, trailing ones held back."""
        if not self.sent:
            piece = piece.lstrip()
        body = piece.rstrip()
        if not body:
            self._held += piece
            return ""
        out, self._held = self._held + body, piece[len(body) :]
        return out
