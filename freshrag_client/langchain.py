"""A LangChain retriever over FreshRAG's /retrieve (extra: `freshrag[langchain]`).

Each hit becomes a `Document` whose `page_content` is the hit's text and whose metadata
is the rest of the hit (doc_id, version, section, path, indexed_at, score ...).
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, model_validator

from freshrag_client.aio import AsyncClient
from freshrag_client.models import Group, Hit, Mode, hit_id, hit_metadata
from freshrag_client.sync import Client


def to_document(hit: Hit) -> Document:
    return Document(id=hit_id(hit), page_content=hit.text, metadata=hit_metadata(hit))


class FreshRAGRetriever(BaseRetriever):
    """`invoke`/`ainvoke` call POST /retrieve with these filters, mode and top_k.

    Give `client` for the sync path, `async_client` for the async one, or both; with only
    `client`, the async path runs it in a thread (LangChain's default). Tenant and groups
    come from the clients' API key.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: Client | None = None
    async_client: AsyncClient | None = None
    filters: dict[str, Any] | None = None
    mode: Mode | None = None
    top_k: int | None = None
    group: Group | None = None

    @model_validator(mode="after")
    def _has_a_client(self) -> FreshRAGRetriever:
        if self.client is None and self.async_client is None:
            raise ValueError("FreshRAGRetriever needs a client, an async_client or both")
        return self

    def _search(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            "mode": self.mode,
            "top_k": self.top_k,
            "group": self.group,
        }

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.client is None:
            raise TypeError("this retriever has only an async_client: use ainvoke()")
        return [to_document(h) for h in self.client.retrieve(query, **self._search()).hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.async_client is None:
            return await super()._aget_relevant_documents(query, run_manager=run_manager)
        found = await self.async_client.retrieve(query, **self._search())
        return [to_document(h) for h in found.hits]
