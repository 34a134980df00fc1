"""The ranking stages a search request may set: fields of /retrieve and /answer bodies.

Built per app (`ranking_fields`), so the OpenAPI document shows this server's limits and
whether it has a reranker; `stages_of` turns a validated body into the read path's
`Stages`. Every field may be left out (or null): the deployment's default then holds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, StrictInt
from pydantic_core import PydanticCustomError

from retrieval.stages import (
    HALF_LIFE_PATTERN,
    MAX_RERANK_CANDIDATES,
    MAX_WEIGHT,
    MIN_WEIGHT,
    Stages,
    half_life_s,
)

FUSION_DOC = (
    "Hybrid fusion inside Qdrant: rrf (weighted reciprocal-rank fusion) or dbsf "
    "(distribution-based score fusion: each list's scores normalised, then summed). "
    "Default: the server's FRESHRAG_FUSION."
)
WEIGHT_DOC = (
    "Weight of the {side} list in hybrid fusion, either method ({low:g} to {high:g}). "
    "Default: the server's FRESHRAG_FUSION_{env}_WEIGHT."
)
DIVERSITY_DOC = (
    "MMR inside Qdrant, 0 (off) to 1: each next chunk trades this much of its similarity "
    "to the query for being unlike those already chosen (MMR's lambda is 1 minus it). "
    "The hits then come in MMR's order, scored by their dense similarity, and the page "
    "and heading boosts are off. Default: the server's FRESHRAG_DIVERSITY."
)
RECENCY_DOC = (
    "A half-life (12h, 30d, 2w: hours, days or weeks, 1 to 99999) or off: inside Qdrant "
    "each fused score is multiplied by 0.5^(age / half-life), age from the chunk's "
    "event_time to now. Default: the server's FRESHRAG_RECENCY."
)
RERANK_DOC = (
    "Whether the server's reranker (FRESHRAG_RERANKER) re-orders the best "
    "rerank_candidates chunks before grouping; its time is in timings.rerank_ms. Default: "
    "on when the server has one."
)
NO_RERANKER_DOC = "This server has no reranker (FRESHRAG_RERANKER=none): only false."
CANDIDATES_DOC = (
    "Chunks the reranker re-orders (1 to {high}). Default: the server's FRESHRAG_RERANK_CANDIDATES."
)


def _recency(value: str) -> str:
    try:
        half_life_s(value)
    except ValueError as exc:
        raise PydanticCustomError("recency", str(exc)) from None
    return value


def _no_reranker(value: bool) -> bool:
    if value:
        raise PydanticCustomError(
            "rerank", "this server has no reranker (FRESHRAG_RERANKER=none): rerank must be false"
        )
    return value


def _whole(value: Any) -> Any:
    """JSON Schema's integer is a value: 20.0 is 20 (`true`, "20" and 20.5 stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Weight = Annotated[float, Field(strict=True, ge=MIN_WEIGHT, le=MAX_WEIGHT)]


def ranking_fields(reranker: bool) -> dict[str, Any]:
    """`create_model` fields of the stages; `reranker`: whether this server has one (if
    not, `rerank` accepts only false, so a request the document allows is never refused)."""
    rerank: Any = StrictBool
    if not reranker:
        rerank = Annotated[
            StrictBool, AfterValidator(_no_reranker), Field(json_schema_extra={"enum": [False]})
        ]
    weight = {"low": MIN_WEIGHT, "high": MAX_WEIGHT}
    return {
        "fusion": (Literal["rrf", "dbsf"] | None, Field(None, description=FUSION_DOC)),
        "dense_weight": (
            Weight | None,
            Field(None, description=WEIGHT_DOC.format(side="dense", env="DENSE", **weight)),
        ),
        "sparse_weight": (
            Weight | None,
            Field(None, description=WEIGHT_DOC.format(side="sparse", env="SPARSE", **weight)),
        ),
        "diversity": (
            Annotated[float, Field(strict=True, ge=0, le=1)] | None,
            Field(None, description=DIVERSITY_DOC),
        ),
        "recency": (
            Annotated[
                str,
                AfterValidator(_recency),
                # As a JSON Schema validator reads it, and `_recency` alike (not pydantic's
                # own `pattern`, whose regex dialect ends `$` differently).
                Field(json_schema_extra={"pattern": HALF_LIFE_PATTERN}),
            ]
            | None,
            Field(None, description=RECENCY_DOC),
        ),
        "rerank": (
            rerank | None,
            Field(None, description=RERANK_DOC if reranker else NO_RERANKER_DOC),
        ),
        "rerank_candidates": (
            Annotated[StrictInt, Field(ge=1, le=MAX_RERANK_CANDIDATES), BeforeValidator(_whole)]
            | None,
            Field(None, description=CANDIDATES_DOC.format(high=MAX_RERANK_CANDIDATES)),
        ),
    }


def stages_of(body: Any) -> Stages:
    """A validated search body's stages (a body without the fields: all defaults)."""
    recency = getattr(body, "recency", None)
    return Stages(
        fusion=getattr(body, "fusion", None),
        dense_weight=getattr(body, "dense_weight", None),
        sparse_weight=getattr(body, "sparse_weight", None),
        diversity=getattr(body, "diversity", None),
        recency_s=None if recency is None else half_life_s(recency),
        rerank=getattr(body, "rerank", None),
        rerank_candidates=getattr(body, "rerank_candidates", None),
    )
