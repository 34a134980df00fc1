"""What the HTTP layer serves from: the index, its retriever and answers, the API keys.

The composition root (freshrag/runtime.py) builds a `Services`; a blue/green switch
(freshrag/generations/controller.py) swaps its fields in place, so routes read them per
request through api/deps.py rather than keeping their own references.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from api.auth import KeyStore
from api.usage import UsageLedger
from api.waits import DocumentWatch
from freshrag.settings import Settings
from retrieval.answer.prompts import PromptRegistry
from retrieval.answer.service import AnswerService
from retrieval.search import Retriever
from retrieval.store.ports import Index


class Deployment(Protocol):
    """The index generations this process serves, as the API uses them (structurally
    freshrag.generations.controller.Deployment, which sits above the API and so is not
    imported here). Methods raise GenerationError when the state does not allow them."""

    def standby_stack(self) -> Services: ...

    def status(self, public: bool = False) -> dict[str, Any]: ...

    def reindex(self, model: str) -> dict[str, Any]: ...

    def switch(self, force: bool = False) -> dict[str, Any]: ...

    def drop_standby(self) -> dict[str, Any]: ...


class Tuner(Protocol):
    """`freshrag tune`'s job (freshrag/tuning/job.py, above the API). `start` raises
    TuneError when one runs already or the scope is too small to learn from."""

    def start(
        self, tenant: str | None, steps: int | None, max_seconds: float | None
    ) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def cancel(self) -> dict[str, Any]: ...


@dataclass
class Services:
    settings: Settings
    index: Index
    retriever: Retriever
    keys: KeyStore
    broker_ready: Callable[[], bool]
    answers: AnswerService | None = None
    prompts: PromptRegistry | None = None
    # Wakes GET /documents long-polls; the ingest worker calls `watch.notify(tenant, doc_id)`.
    watch: DocumentWatch | None = None
    # Operator details for /readyz from the worker of this process (e.g. lost broker state).
    ingest_status: Callable[[], dict[str, Any]] | None = None
    # Whether this process's workers are warm (children, model, group): until then the
    # first edit would wait for them, so /readyz says not ready.
    ingest_ready: Callable[[], bool] | None = None
    # The generations (index + model) this process serves: freshrag/generations/controller.py.
    # None in tests that wire one index by hand.
    deployment: Deployment | None = None
    # Every provider call's tokens and cost (api/usage.py); None: not accounted (tests).
    usage: UsageLedger | None = None
    # Corpus adaptation of the embedding model (`freshrag tune`); None: not offered.
    tuner: Tuner | None = None
