"""LLM-judged RAGAS metrics, when an OpenAI-compatible judge endpoint is configured.

Faithfulness (answer claims supported by the cited contexts), answer relevancy (judge
questions generated from the answer, compared with the local embedder) and LLM context
precision without reference. Off unless `--judge-url` and `--judge-model` are given.
"""

from __future__ import annotations

import asyncio
from typing import Any

from evals.metrics import mean


def judged_scores(
    rows: list[dict[str, Any]], url: str, model: str, api_key: str | None, embedding_model: str
) -> dict[str, float | None]:
    from openai import AsyncOpenAI
    from ragas.embeddings import HuggingFaceEmbeddings
    from ragas.llms import llm_factory
    from ragas.metrics.collections import (
        AnswerRelevancy,
        ContextPrecisionWithoutReference,
        Faithfulness,
    )

    llm = llm_factory(model, client=AsyncOpenAI(base_url=url, api_key=api_key or "none"))
    embeddings = HuggingFaceEmbeddings(model=embedding_model)
    faithfulness = Faithfulness(llm=llm)
    relevancy = AnswerRelevancy(llm=llm, embeddings=embeddings, strictness=1)
    precision = ContextPrecisionWithoutReference(llm=llm)

    async def score(row: dict[str, Any]) -> dict[str, float]:
        q, a, ctx = row["question"], row["answer"], row["contexts"]
        return {
            "faithfulness": (
                await faithfulness.ascore(user_input=q, response=a, retrieved_contexts=ctx)
            ).value,
            "answer_relevancy": (await relevancy.ascore(user_input=q, response=a)).value,
            "llm_context_precision": (
                await precision.ascore(user_input=q, response=a, retrieved_contexts=ctx)
            ).value,
        }

    async def all_rows() -> list[dict[str, float]]:
        return [await score(r) for r in rows if r["contexts"] and not r["refused"]]

    scored = asyncio.run(all_rows())
    return {
        k: mean([s[k] for s in scored])
        for k in ("faithfulness", "answer_relevancy", "llm_context_precision")
    }
