"""Training pairs mined from the indexed chunks' own structure: no question, no label.

A pair is (anchor, positive): the anchor stands in for a query, the positive is the chunk
as the encoder reads it at index time (heading path line, then the text), so the model
learns the distribution it will embed. Kinds:

- `cloze`: one sentence of a chunk's prose, and the chunk without that sentence (the
  inverse cloze task). The anchor shares meaning with its context, not its words, which
  is what a question that paraphrases its subject needs.
- `heading`: a section's heading path ("Page › Part › Section"), and the section's first
  chunk. It teaches names; alone it trades meaning for names (issue 29's trial: named
  questions +0.04 page MRR, paraphrased ones −0.05), so it is a minority of the mix.
- `neighbour`: a chunk's text, and the next chunk of the same section.

Pure: the caller reads the chunks (freshrag/tuning/corpus.py) and trains on the result.
Deterministic for a seed; deduplicated by anchor; at most `per_document` pairs of a kind
from one page, so a few long reference pages do not make the whole mix.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("cloze", "heading", "neighbour")
DEFAULT_MIX: dict[str, float] = {"cloze": 0.6, "heading": 0.25, "neighbour": 0.15}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(])")
_WORD = re.compile(r"[a-z0-9_]+")
MIN_WORDS, MAX_WORDS = 8, 40  # a cloze anchor: a real sentence, not a caption or a list


@dataclass(frozen=True, slots=True)
class Pair:
    anchor: str
    positive: str
    kind: str


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """What mining reads of a stored chunk's payload (`text`, `path`, `section`)."""

    text: str
    path: tuple[str, ...]
    section: str

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> StoredChunk:
        return cls(
            str(payload.get("text") or ""),
            tuple(str(p) for p in payload.get("path") or ()),
            str(payload.get("section") or ""),
        )


def _key(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def prose_sentences(text: str) -> list[str]:
    """The sentences of a chunk's prose: heading lines, fenced code and list items left out."""
    out: list[str] = []
    in_code = False
    for block in text.split("\n\n"):
        lines = []
        for line in block.split("\n"):
            if line.startswith("```"):
                in_code = not in_code
                continue
            if in_code or line.startswith("## ") or line.lstrip().startswith("- "):
                continue
            lines.append(line.strip())
        paragraph = " ".join(x for x in lines if x)
        for sentence in _SENTENCE_END.split(paragraph):
            n = len(sentence.split())
            if MIN_WORDS <= n <= MAX_WORDS and sentence[-1:] in ".!?":
                out.append(sentence)
    return out


def _document_pairs(
    chunks: Sequence[StoredChunk],
    indexed: Callable[[StoredChunk, str], str],
    rng: random.Random,
    per_document: int,
) -> dict[str, list[Pair]]:
    out: dict[str, list[Pair]] = {k: [] for k in KINDS}
    seen_sections: set[tuple[tuple[str, ...], str]] = set()
    for i, chunk in enumerate(chunks):
        whole = indexed(chunk, chunk.text)
        where = (chunk.path, chunk.section)
        if chunk.section and where not in seen_sections:
            seen_sections.add(where)
            out["heading"].append(Pair(" › ".join([*chunk.path, chunk.section]), whole, "heading"))
        sentences = prose_sentences(chunk.text)
        if sentences:
            sentence = rng.choice(sentences)
            rest = chunk.text.replace(sentence, " ", 1)
            if len(_key(rest).split()) >= MIN_WORDS:
                out["cloze"].append(Pair(sentence, indexed(chunk, rest), "cloze"))
        nxt = chunks[i + 1] if i + 1 < len(chunks) else None
        if nxt and (nxt.path, nxt.section) == where and len(_key(chunk.text).split()) >= 8:
            out["neighbour"].append(Pair(chunk.text, indexed(nxt, nxt.text), "neighbour"))
    for kind, pairs in out.items():
        if len(pairs) > per_document:
            out[kind] = rng.sample(pairs, per_document)
    return out


def mine_pairs(
    documents: Iterable[Sequence[StoredChunk]],
    header: Callable[[tuple[str, ...]], str],
    *,
    limit: int,
    mix: Mapping[str, float] | None = None,
    per_document: int = 12,
    seed: int = 0,
) -> list[Pair]:
    """Up to `limit` pairs in the proportions of `mix` (a kind that runs short leaves its
    share to the others), shuffled. `header(path)` is the chunker's heading line for a
    chunk's path: the positive is built exactly as the encoder reads the chunk."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = set(mix) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown pair kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    rng = random.Random(seed)

    def indexed(chunk: StoredChunk, text: str) -> str:
        head = header(chunk.path)
        return f"{head}\n\n{text}" if head else text

    pools: dict[str, list[Pair]] = {k: [] for k in KINDS}
    for chunks in documents:
        for kind, pairs in _document_pairs(chunks, indexed, rng, per_document).items():
            pools[kind] += pairs
    anchors: set[str] = set()
    for kind in KINDS:  # one anchor text, one pair: a boilerplate sentence teaches nothing
        unique = []
        for p in pools[kind]:
            key = _key(p.anchor)
            if key and key not in anchors:
                anchors.add(key)
                unique.append(p)
        rng.shuffle(unique)
        pools[kind] = unique
    weights = {k: w for k, w in mix.items() if w > 0}
    chosen: list[Pair] = []
    budget = limit
    while budget > 0 and weights:
        total = sum(weights.values())
        quota = {k: max(1, round(budget * w / total)) for k, w in weights.items()}
        for kind, n in quota.items():
            take = pools[kind][:n]
            pools[kind] = pools[kind][n:]
            chosen += take
            if not pools[kind]:
                weights.pop(kind)
        budget = limit - len(chosen)
    chosen = chosen[:limit]
    rng.shuffle(chosen)
    return chosen


def count_kinds(pairs: Iterable[Pair]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for p in pairs:
        counts[p.kind] += 1
    return counts
