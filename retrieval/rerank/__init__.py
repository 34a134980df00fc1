"""The optional rerank stage: a model re-orders the best fused chunks before grouping.

`base` is what the read path sees (the `Reranker` protocol, the candidate text); each
kind lives in its own module (`cross_encoder`, `llm`), and `factory` builds the one
FRESHRAG_RERANKER names. Nothing is imported here, so each module stays in its layer.
"""
