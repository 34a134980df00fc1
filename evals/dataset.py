"""Evaluation sets as versioned JSONL, and the builder for the Django FAQ set.

One line per question: `id`, `question`, optional `reference` (answer text),
`gold_doc_ids` and/or `gold_contexts` (context ids `doc_id#section`) and `gold_passages`
(text). Bring your own set in the same format with `freshrag eval --dataset FILE`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from ingest.parser import parse

DATASETS = Path(__file__).with_name("datasets")
DATASET_VERSION = 1


class EvalItem(BaseModel):
    id: str
    question: str = Field(min_length=1)
    reference: str | None = None
    gold_doc_ids: list[str] = Field(default_factory=list)
    gold_contexts: list[str] = Field(default_factory=list, description="doc_id#section ids")
    gold_passages: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs_gold(self) -> EvalItem:
        if not (self.gold_doc_ids or self.gold_contexts):
            raise ValueError(f"item {self.id}: give gold_doc_ids or gold_contexts")
        return self


def context_id(doc_id: str, section: str | None) -> str:
    return f"{doc_id}#{' '.join((section or '').split())}"


def load(path: Path) -> list[EvalItem]:
    items = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                items.append(EvalItem.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: {exc}") from exc
    if not items:
        raise ValueError(f"{path}: no questions")
    return items


def save(items: list[EvalItem], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(item.model_dump_json(exclude_none=True) + "\n" for item in items))


def default_path(django_version: str) -> Path:
    return DATASETS / f"django-faq-{django_version}.v{DATASET_VERSION}.jsonl"


def question_sections(elements: list) -> list[tuple[str, str]]:
    """(heading, body) for every section whose heading ends in '?'."""
    sections: list[tuple[str, list[str]]] = []
    for e in elements:
        if e.category == "Title":
            heading = " ".join(e.text.split())
            sections.append((heading, []) if heading.endswith("?") else ("", []))
        elif sections and sections[-1][0]:
            sections[-1][1].append(e.text)
    return [(h, "\n".join(body)) for h, body in sections if h and body]


def build_django_faq(docs: Path, prefix: str = "django/") -> list[EvalItem]:
    """FAQ sections whose heading ends in '?' become questions; the section is the gold passage.

    Parsed with the same pipeline the service indexes with, so section headings match
    the `section` the chunks carry.
    """
    items: list[EvalItem] = []
    for f in sorted((docs / "faq").glob("*.txt")):
        doc_id = prefix + f.relative_to(docs).as_posix()
        for heading, body in question_sections(parse(f.read_text(encoding="utf-8"), "text/x-rst")):
            items.append(
                EvalItem(
                    id=f"{f.stem}-{len(items) + 1:03d}",
                    question=heading,
                    reference=" ".join(body.split())[:2000],
                    gold_doc_ids=[doc_id],
                    gold_contexts=[context_id(doc_id, heading)],
                    gold_passages=[body],
                )
            )
    return items


if __name__ == "__main__":  # python -m evals.dataset DOCS_DIR DJANGO_VERSION
    import sys

    built = build_django_faq(Path(sys.argv[1]))
    out = default_path(sys.argv[2])
    save(built, out)
    print(json.dumps({"questions": len(built), "file": str(out)}))
