"""A LlamaIndex retriever over FreshRAG's /retrieve (extra: `freshrag[llamaindex]`).

Each hit becomes a `NodeWithScore` whose node's text is the hit's text and whose metadata
is the rest of the hit (doc_id, version, section, path, indexed_at, score ...), so an
answer built on it can cite and date its sources exactly as /retrieve does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from freshrag_client.aio import AsyncClient
from freshrag_client.models import Group, Hit, Mode, hit_id, hit_metadata
from freshrag_client.sync import Client

# Shown to the LLM and the embedder with the text: what a citation needs (when set). The
# rest (timestamps, scores, chunk bookkeeping) stays in the metadata for code to read.
CITED_KEYS = ("doc_id", "version", "title", "source", "section", "path")


def to_node(hit: Hit) -> NodeWithScore:
    metadata = hit_metadata(hit)
    hidden = [k for k, v in metadata.items() if k not in CITED_KEYS or v in (None, "", [])]
    node = TextNode(
        id_=hit_id(hit),
        text=hit.text,
        metadata=metadata,
        excluded_llm_metadata_keys=hidden,
        excluded_embed_metadata_keys=hidden,
    )
    return NodeWithScore(node=node, score=hit.score)


class FreshRAGRetriever(BaseRetriever):
    """`retrieve`/`aretrieve` call POST /retrieve with these filters, mode and top_k.

    Give a `Client` for the sync path, an `AsyncClient` for the async one, or both; with
    only a `Client`, `aretrieve` runs it in a thread. Tenant and groups come from the
    clients' API key, as for any caller.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        async_client: AsyncClient | None = None,
        filters: Mapping[str, Any] | None = None,
        mode: Mode | None = None,
        top_k: int | None = None,
        group: Group | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if client is None and async_client is None:
            raise ValueError("FreshRAGRetriever needs a Client, an AsyncClient or both")
        self.client = client
        self.async_client = async_client
        self.search: dict[str, Any] = {
            "filters": filters,
            "mode": mode,
            "top_k": top_k,
            "group": group,
        }
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.client is None:
            raise TypeError("this retriever has only an AsyncClient: use aretrieve()")
        found = self.client.retrieve(query_bundle.query_str, **self.search)
        return [to_node(h) for h in found.hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.async_client is None:
            return await asyncio.to_thread(self._retrieve, query_bundle)
        found = await self.async_client.retrieve(query_bundle.query_str, **self.search)
        return [to_node(h) for h in found.hits]
