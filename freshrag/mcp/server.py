"""The MCP server: a `search` tool, an `answer` tool and a document resource, each one
call to the FreshRAG API with the caller's key (freshrag.mcp.keys).

The tools return the API's own response models, so an agent gets as structured output
exactly what /retrieve or /answer returns for the same request (and the JSON of it as
text, for clients that read only text). Arguments an agent leaves out are left out of
the request, so the server's defaults and limits apply; the API's 422 comes back as a
tool error naming the argument. The ranking stages (fusion, weights, diversity, recency,
rerank) are typed as the API types them (api/ranking.py), so a bad value is refused with
the API's own rule and words before any request is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import ToolAnnotations
from pydantic import Field, StrictInt

from api.ranking import ranking_fields
from freshrag.mcp.api import Api, ApiUnreachable, message
from freshrag.mcp.keys import NoKey
from freshrag_client import AnswerResponse, AsyncClient, FreshRAGError, NotFound, RetrieveResponse
from freshrag_client.models import Group, Mode

DOCUMENT_URI = "freshrag://documents/{+doc_id}"  # `+`: a doc id may hold slashes

INSTRUCTIONS = """\
FreshRAG searches an organisation's documents, kept current as they change. Use `search`
for cited passages (each hit names its doc_id, version, section and when it was
indexed), `answer` for an answer written from those passages with [n] citations, and
the resource freshrag://documents/{doc_id} for what the index holds of one document.
Only documents the API key may read are ever searched, cited or shown."""

Query = Annotated[str, Field(description="What to search for, in natural language.")]
Filters = Annotated[
    dict[str, Any] | None,
    Field(
        description='All must hold. Equality {"doc_id": "a"}, any-of {"metadata.lang": '
        '["en", "de"]}, range {"version": {"gte": 2}}, negation {"metadata.doc_type": '
        '{"not": "release-notes"}}, prefix {"doc_id": {"prefix": "topics/"}}. Fields: '
        "doc_id, title, source, mime, version, chunk_index, metadata.<key>.",
    ),
]
SearchMode = Annotated[
    Mode | None,
    Field(
        description="hybrid (default): dense and sparse fused; dense: by meaning; sparse: words."
    ),
]
TopK = Annotated[
    StrictInt | None,  # as on the API: true, 5.0 and "5" are refused, not read as numbers
    Field(description="How many hits (default 5; the server caps it)."),
]
Grouping = Annotated[
    Group | None,
    Field(description="section (default): one hit per document section; chunk: every chunk."),
]

# The ranking stages, each with the type, limits and validators of the API's own field
# (api/ranking.py), so the tool's schema shows the same limits and refuses what the API
# would. `rerank` as a server with a reranker takes it: whether this one has one is the
# API's to say (a 422 that comes back as a tool error naming `rerank`).
_STAGES = ranking_fields(reranker=True)


def _stage(name: str) -> Any:
    kind, field = _STAGES[name]
    return Annotated[kind, Field(description=field.description)]


FusionMethod = _stage("fusion")
DenseWeight = _stage("dense_weight")
SparseWeight = _stage("sparse_weight")
Diversity = _stage("diversity")
Recency = _stage("recency")
Rerank = _stage("rerank")
RerankCandidates = _stage("rerank_candidates")

KeyOf = Callable[[Context], str]


def _ranking(**stages: Any) -> dict[str, Any]:
    """The stages the agent set; those it left out keep the server's defaults."""
    return {name: value for name, value in stages.items() if value is not None}


def build_server(api: Api, key_of: KeyOf) -> MCPServer:
    """The server; `key_of` says which key a call carries (fixed on stdio, the HTTP
    request's own on streamable HTTP)."""

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await api.aclose()

    server = MCPServer(
        "freshrag",
        title="FreshRAG",
        instructions=INSTRUCTIONS,
        version=_version(),
        lifespan=lifespan,
    )
    reading = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @asynccontextmanager
    async def tool_call(ctx: Context) -> AsyncIterator[AsyncClient]:
        """The caller's client; what goes wrong, as a tool error the agent can read."""
        try:
            async with api.call(key_of(ctx)) as client:
                yield client
        except FreshRAGError as exc:
            raise ToolError(message(exc)) from exc
        except (ApiUnreachable, NoKey) as exc:
            raise ToolError(str(exc)) from exc

    @server.tool(title="Search documents", annotations=reading)
    async def search(
        query: Query,
        ctx: Context,
        filters: Filters = None,
        mode: SearchMode = None,
        top_k: TopK = None,
        group: Grouping = None,
        fusion: FusionMethod = None,
        dense_weight: DenseWeight = None,
        sparse_weight: SparseWeight = None,
        diversity: Diversity = None,
        recency: Recency = None,
        rerank: Rerank = None,
        rerank_candidates: RerankCandidates = None,
    ) -> RetrieveResponse:
        """Cited passages for a query: each hit's text with its doc_id, version, section,
        path, indexed_at and score (what POST /retrieve returns), best first. Optional
        ranking stages: `diversity` for breadth over one page's sections, `recency` to
        prefer newer documents, `fusion` and its weights, `rerank`."""
        stages = _ranking(
            fusion=fusion,
            dense_weight=dense_weight,
            sparse_weight=sparse_weight,
            diversity=diversity,
            recency=recency,
            rerank=rerank,
            rerank_candidates=rerank_candidates,
        )
        async with tool_call(ctx) as client:
            return await client.retrieve(
                query, filters=filters, mode=mode, top_k=top_k, group=group, **stages
            )

    @server.tool(title="Answer from documents", annotations=reading)
    async def answer(
        query: Query,
        ctx: Context,
        filters: Filters = None,
        mode: SearchMode = None,
        top_k: TopK = None,
        fusion: FusionMethod = None,
        dense_weight: DenseWeight = None,
        sparse_weight: SparseWeight = None,
        diversity: Diversity = None,
        recency: Recency = None,
        rerank: Rerank = None,
        rerank_candidates: RerankCandidates = None,
    ) -> AnswerResponse:
        """An answer written only from the passages a search finds, each claim cited as [n]
        (`citations` lists n, doc_id, version and the cited text); `refused` when the
        passages do not answer the question (what POST /answer returns). The search takes
        the same ranking stages as `search`."""
        stages = _ranking(
            fusion=fusion,
            dense_weight=dense_weight,
            sparse_weight=sparse_weight,
            diversity=diversity,
            recency=recency,
            rerank=rerank,
            rerank_candidates=rerank_candidates,
        )
        async with tool_call(ctx) as client:
            return await client.answer(query, filters=filters, mode=mode, top_k=top_k, **stages)

    @server.resource(
        DOCUMENT_URI,
        name="document",
        title="An indexed document",
        description="What the index holds of a document: its version, when that version "
        "was indexed, its chunk count, title and source (GET /documents/{doc_id}). "
        "A document the key cannot read reads as not indexed.",
        mime_type="application/json",
    )
    async def document(doc_id: str, ctx: Context) -> str:
        try:
            async with api.call(key_of(ctx)) as client:
                info = await client.document(doc_id)
        except NotFound as exc:  # the API's words: the same for absent and unreadable
            raise ResourceNotFoundError(exc.detail) from exc
        except FreshRAGError as exc:
            raise ResourceError(message(exc)) from exc
        except (ApiUnreachable, NoKey) as exc:
            raise ResourceError(str(exc)) from exc
        return info.model_dump_json()

    return server


def _version() -> str:
    try:
        return version("freshrag")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return ""
