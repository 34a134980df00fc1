"""FreshRAG's Python client: `Client` (blocking) and `AsyncClient` (asyncio) over the HTTP
API, typed with the API's own response models.

Importing it loads httpx, pydantic and tenacity only: no FastAPI, no torch. The
framework retrievers are separate modules, imported only when used:
`freshrag_client.llamaindex` and `freshrag_client.langchain`.
"""

from freshrag_client.aio import AsyncClient
from freshrag_client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    FreshRAGError,
    NotFound,
    RateLimited,
    TimedOut,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from freshrag_client.models import (
    AnswerDelta,
    AnswerEvent,
    AnswerReset,
    AnswerResponse,
    AnswerStreamError,
    Citation,
    DocumentInfo,
    Hit,
    PromptInfo,
    PromptSelector,
    ProviderInfo,
    RankingOptions,
    RetrieveResponse,
)
from freshrag_client.streams import AnswerStream, AsyncAnswerStream
from freshrag_client.sync import Client

__all__ = [
    "AnswerDelta",
    "AnswerEvent",
    "AnswerReset",
    "AnswerResponse",
    "AnswerStream",
    "AnswerStreamError",
    "AsyncAnswerStream",
    "AsyncClient",
    "BadRequest",
    "Citation",
    "Client",
    "Conflict",
    "DocumentInfo",
    "Forbidden",
    "FreshRAGError",
    "Hit",
    "NotFound",
    "PromptInfo",
    "PromptSelector",
    "ProviderInfo",
    "RankingOptions",
    "RateLimited",
    "RetrieveResponse",
    "TimedOut",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]
