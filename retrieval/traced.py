"""A query batch's forward pass as one TorchScript call.

Eager PyTorch releases the GIL inside each operator and takes it back after: a MiniLM
forward does so a few hundred times. In the API process the GIL is wanted by the HTTP
threads and the ingest worker, and each take-back can wait out their switch interval
(5 ms), so an eager query batch beside busy Python threads ran 7× slower in one measure
(12 queries in 2 s against 84 traced). A traced graph runs in one call, with the GIL
released for all of it, and skips the modules' Python (about 15 % faster alone).

The graph is traced from the loaded model and checked against it on probe batches of
different sizes and lengths before it serves; any difference, or a model that cannot be
traced, leaves the eager model in place (and the log says why).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger("freshrag.encoders")

# Probes: one word, a sentence, and a text longer than the model reads (truncated).
_PROBES = [
    "deploy",
    "How do I configure static files for a production deployment?",
    " ".join(["the worker commits offsets after each written batch"] * 60),
]
MIN_COSINE = 0.9999


class TracedForward:
    """Features (the model's tokenizer output) → unit embeddings (float32), in one call."""

    def __init__(self, graph: Any, keys: list[str]) -> None:
        self._graph, self._keys = graph, keys

    def __call__(self, features: Any) -> np.ndarray:
        import torch

        # The plain interpreter: the profiling executor re-specialises for new shapes,
        # and every query batch has a new shape.
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            out = self._graph(*(features[k] for k in self._keys))
            out = torch.nn.functional.normalize(out, p=2, dim=1)
        return out.float().numpy()


def trace(
    model: Any, prepare: Callable[[list[str]], Any], eager: Callable[[list[str]], np.ndarray]
) -> TracedForward | None:
    """`model` (a SentenceTransformer) traced and checked against `eager` (texts → unit
    embeddings); None if the trace fails or differs (cosine below MIN_COSINE on any probe).
    `prepare` is the model's tokenizer call."""
    import torch

    try:
        example = prepare(_PROBES[:2])
        keys = [k for k, v in example.items() if isinstance(v, torch.Tensor)]
        extra = {k: v for k, v in example.items() if not isinstance(v, torch.Tensor)}
        # Tracing records parameters as constants: they must not require gradients.
        for p in model.parameters():
            p.requires_grad_(False)
        # The tracer warns about each Python condition it records as a constant (padding
        # checks that hold for every batch the probes below exercise).
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            graph = torch.jit.trace(
                _Features(model, keys, extra).eval(),
                tuple(example[k] for k in keys),
                check_trace=False,
                strict=False,
            )
        traced = TracedForward(graph, keys)
        worst = min(_agreement(traced, prepare, eager, batch) for batch in _batches())
    except Exception as exc:  # any model sentence-transformers loads may be configured
        log.warning("query encoder: the model could not be traced (%s); eager mode", exc)
        return None
    if worst < MIN_COSINE:
        log.warning("query encoder: the traced model differs (cosine %.6f); eager mode", worst)
        return None
    return traced


def _batches() -> Sequence[list[str]]:
    return [[_PROBES[0]], [_PROBES[1]], list(_PROBES), [_PROBES[2], _PROBES[0]]]


def _agreement(
    traced: TracedForward,
    prepare: Callable[[list[str]], Any],
    eager: Callable[[list[str]], np.ndarray],
    batch: list[str],
) -> float:
    a, b = eager(batch), traced(prepare(batch))
    if a.shape != b.shape:
        return -1.0
    return float((a * b).sum(axis=1).min())


class _Features:
    """Positional tensors → the model's feature dict → its sentence embedding, so that
    `torch.jit.trace` (positional tensors only) can record the whole pipeline, pooling and
    normalisation included."""

    def __new__(cls, model: Any, keys: list[str], extra: dict[str, Any]) -> Any:
        import torch

        class Features(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                features = dict(zip(keys, tensors, strict=True)) | extra
                return self.model(features)["sentence_embedding"]

        return Features()
