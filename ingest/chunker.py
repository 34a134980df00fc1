"""Parsed elements → stable chunks (llama-index node parsers).

Chunks follow the document's sections (MarkdownNodeParser), and only a section longer
than `chunk_size` tokens is split further (SentenceSplitter, no overlap by default).
So an edit inside one section changes that section's chunk(s) and leaves the hashes of
every other chunk alone: that is what makes re-embedding proportional to the edit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from llama_index.core import Document
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

from ingest.parser import Element


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    text: str
    hash: str
    section: str


def content_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:32]


def elements_to_markdown(elements: list[Element]) -> str:
    parts: list[str] = []
    for e in elements:
        text = e.text.strip()
        if e.category == "Title":
            parts.append("## " + " ".join(text.split()))
        elif e.category == "CodeSnippet":
            parts.append("```\n" + text.replace("```", "'''") + "\n```")
        elif e.category == "ListItem":
            parts.append("- " + text)
        else:
            parts.append(text)
    return "\n\n".join(parts)


class Chunker:
    def __init__(self, chunk_size: int = 256, chunk_overlap: int = 0) -> None:
        self._sections = MarkdownNodeParser(include_metadata=True, include_prev_next_rel=False)
        self._splitter = SentenceSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, include_prev_next_rel=False
        )

    def chunk(self, elements: list[Element]) -> list[Chunk]:
        markdown = elements_to_markdown(elements)
        if not markdown.strip():
            return []
        sections = self._sections.get_nodes_from_documents([Document(text=markdown)])
        chunks: list[Chunk] = []
        seen: dict[str, int] = {}
        for section in sections:
            first = section.text.lstrip().split("\n", 1)[0]
            heading = first.lstrip("#").strip() if first.startswith("#") else ""
            parts = self._splitter.get_nodes_from_documents([Document(text=section.text)])
            for k, node in enumerate(parts):
                text = node.text.strip()
                if not text:
                    continue
                if k and heading:  # a continuation keeps its section's heading for context
                    text = f"## {heading}\n\n{text}"
                h = content_hash(text)
                # The same text twice in one document still needs two distinct ids.
                n = seen.get(h, 0)
                seen[h] = n + 1
                if n:
                    h = content_hash(f"{text}\x00{n}")
                chunks.append(Chunk(len(chunks), text, h, heading))
        return chunks
