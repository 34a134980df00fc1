"""Evaluation sets as versioned JSONL, and the builders for the Django sets.

One line per question: `id`, `question`, optional `reference` (answer text),
`gold_doc_ids` and/or `gold_contexts` (context ids `doc_id#section`) and `gold_passages`
(text), and `answerable` (false: the docs do not answer it, the right answer is a refusal;
such a question has no gold). Bring your own set in the same format with
`freshrag eval --dataset FILE`.

Shipped sets (`evals/datasets/`):

- `django-dev-VERSION.vN.jsonl`, the default: questions written the way users ask them
  (paraphrased, never a heading or a sentence of the docs), with gold sections across the
  guides, reference, how-tos, tutorials and FAQ, plus unanswerable questions.
- `django-faq-VERSION.vN.jsonl`: the FAQ headings as questions. Each heading is in its
  gold chunk's text, so this is string matching; kept as a regression check.
- `django-faq-heldout-VERSION.vN.jsonl`: the same FAQ questions, with gold sections on the
  FAQ pages as `heldout_faq` rewrites them (question headings replaced by neutral ones),
  so the question text is not in the index. Scored only when the eval indexes those pages
  (`freshrag eval --heldout-faq`).
- `sphinx-VERSION.vN.jsonl`: questions about a second corpus, Sphinx's manual
  (`ingest.second_corpus`), each labelled `named` or `paraphrased` (`phrasing`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from ingest.parser import parse

DATASETS = Path(__file__).with_name("datasets")
DATASET_VERSION = 1
# The neutral heading that replaces the k-th question heading of a held-out FAQ page.
HELDOUT_HEADING = "Entry {k}"


class EvalItem(BaseModel):
    id: str
    question: str = Field(min_length=1)
    reference: str | None = None
    gold_doc_ids: list[str] = Field(default_factory=list)
    gold_contexts: list[str] = Field(default_factory=list, description="doc_id#section ids")
    gold_passages: list[str] = Field(default_factory=list)
    answerable: bool = Field(
        True, description="false: the docs do not answer it; the expected answer is a refusal"
    )
    phrasing: Literal["named", "paraphrased"] | None = Field(
        None,
        description="the writer's label: the question names its subject (the API, option or "
        "term its gold section is about) or describes the need without those names; "
        "unlabelled sets are split by `evals.subjects.names_subject`",
    )

    @model_validator(mode="after")
    def _needs_gold(self) -> EvalItem:
        gold = self.gold_doc_ids or self.gold_contexts or self.gold_passages
        if self.answerable and not (self.gold_doc_ids or self.gold_contexts):
            raise ValueError(f"item {self.id}: give gold_doc_ids or gold_contexts")
        if not self.answerable and gold:
            raise ValueError(f"item {self.id}: an unanswerable question has no gold")
        return self


def context_id(doc_id: str, section: str | None) -> str:
    return f"{doc_id}#{' '.join((section or '').split())}"


def load(path: Path, with_unanswerable: bool = False) -> list[EvalItem]:
    """The set's questions; unanswerable ones only when asked for.

    They have no gold to rank against, so only a caller that scores refusals wants them;
    the default keeps every relevance caller correct on a set that has them.
    """
    items = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                items.append(EvalItem.model_validate_json(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: {exc}") from exc
    if not items:
        raise ValueError(f"{path}: no questions")
    return items if with_unanswerable else [i for i in items if i.answerable]


def save(items: list[EvalItem], path: Path) -> None:
    """One JSON object a line; fields at their default are left out (`answerable: true`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            item.model_dump_json(exclude_none=True, exclude_defaults=True) + "\n" for item in items
        )
    )


def default_path(django_version: str) -> Path:
    """The default set of `freshrag eval`: the user-style dev set."""
    return DATASETS / f"django-dev-{django_version}.v{DATASET_VERSION}.jsonl"


def faq_path(django_version: str) -> Path:
    """The FAQ-headings set (string matching; a regression check)."""
    return DATASETS / f"django-faq-{django_version}.v{DATASET_VERSION}.jsonl"


def heldout_faq_path(django_version: str) -> Path:
    """The FAQ questions against heading-stripped FAQ pages (`--heldout-faq`)."""
    return DATASETS / f"django-faq-heldout-{django_version}.v{DATASET_VERSION}.jsonl"


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


# --- held-out FAQ: the question headings are not in the index --------------------------------

_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1+\s*$")  # a line of one repeated punctuation mark


def _raw_titles(lines: list[str]) -> list[tuple[int, bool]]:
    """(line number, has overline) of each reST section title, in reading order."""
    out: list[tuple[int, bool]] = []
    for i, line in enumerate(lines[:-1]):
        text = line.rstrip()
        under = _ADORNMENT.match(lines[i + 1])
        if not text or line[0].isspace() or _ADORNMENT.match(line) or not under:
            continue
        if len(lines[i + 1].rstrip()) < len(text):
            continue
        over = i > 0 and lines[i - 1].rstrip() == lines[i + 1].rstrip()
        out.append((i, over))
    return out


def strip_question_headings(rst: str) -> tuple[str, list[tuple[str, str]]]:
    """The page with every question heading replaced by `HELDOUT_HEADING`, and the questions.

    A question heading is a section title whose parsed text ends in '?' (as in
    `build_django_faq`). Its section keeps a heading of its own, so it stays one section
    (one gold context), but the heading says nothing: the question text leaves the index.
    Returns (stripped reST, [(neutral heading, question)]). Raises ValueError when the
    source's titles cannot be matched one to one with the parser's.
    """
    lines = rst.split("\n")
    raw = _raw_titles(lines)
    parsed = [" ".join(e.text.split()) for e in parse(rst, "text/x-rst") if e.category == "Title"]
    if len(raw) != len(parsed):
        raise ValueError(f"found {len(raw)} section titles in the source, the parser {len(parsed)}")
    replaced: list[tuple[str, str]] = []
    for (i, over), heading in zip(raw, parsed, strict=True):
        if not heading.endswith("?"):
            continue
        neutral = HELDOUT_HEADING.format(k=len(replaced) + 1)
        mark = lines[i + 1].rstrip()[0]
        lines[i] = neutral
        lines[i + 1] = mark * len(neutral)
        if over:
            lines[i - 1] = mark * len(neutral)
        replaced.append((neutral, heading))
    return "\n".join(lines), replaced


@dataclass
class HeldoutFaq:
    """The FAQ pages without their question headings, and what that changes for a dataset.

    `pages`: doc_id → (source file, stripped reST). `renamed`: context id on the original
    page → context id on the stripped page. `items`: the FAQ questions, gold on the
    stripped pages.
    """

    pages: dict[str, tuple[Path, str]] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    items: list[EvalItem] = field(default_factory=list)


def build_heldout_faq(docs: Path, prefix: str = "django/") -> HeldoutFaq:
    """The held-out FAQ: each question's gold is its answer under a neutral heading.

    The questions and answers are those of `build_django_faq`; only pages with at least
    one question heading are rewritten.
    """
    out = HeldoutFaq()
    for f in sorted((docs / "faq").glob("*.txt")):
        doc_id = prefix + f.relative_to(docs).as_posix()
        source = f.read_text(encoding="utf-8")
        stripped, replaced = strip_question_headings(source)
        if not replaced:
            continue
        out.pages[doc_id] = (f, stripped)
        bodies = dict(question_sections(parse(source, "text/x-rst")))
        for k, (neutral, question) in enumerate(replaced, start=1):
            out.renamed[context_id(doc_id, question)] = context_id(doc_id, neutral)
            if question not in bodies:  # a question heading with no text of its own
                continue
            body = bodies[question]
            out.items.append(
                EvalItem(
                    id=f"heldout-{f.stem}-{k:02d}",
                    question=question,
                    reference=" ".join(body.split())[:2000],
                    gold_doc_ids=[doc_id],
                    gold_contexts=[context_id(doc_id, neutral)],
                    gold_passages=[body],
                )
            )
    return out


def with_heldout_faq(items: list[EvalItem], heldout: HeldoutFaq) -> list[EvalItem]:
    """`items` scored against the stripped FAQ pages, followed by the held-out FAQ questions.

    Gold sections on a rewritten FAQ page are renamed to their neutral headings; a
    question already in `items` (same text) is not added twice.
    """
    out = [
        i.model_copy(update={"gold_contexts": [heldout.renamed.get(c, c) for c in i.gold_contexts]})
        for i in items
    ]
    asked = {" ".join(i.question.lower().split()) for i in out}
    out += [h for h in heldout.items if " ".join(h.question.lower().split()) not in asked]
    return out


if __name__ == "__main__":  # python -m evals.dataset DOCS_DIR DJANGO_VERSION
    import sys

    docs_dir, version = Path(sys.argv[1]), sys.argv[2]
    faq = build_django_faq(docs_dir)
    save(faq, faq_path(version))
    heldout = build_heldout_faq(docs_dir).items
    save(heldout, heldout_faq_path(version))
    print(
        json.dumps(
            {
                "faq": {"questions": len(faq), "file": str(faq_path(version))},
                "faq_heldout": {"questions": len(heldout), "file": str(heldout_faq_path(version))},
                "dev": "hand-written; not rebuilt (see evals/datasets/README.md)",
            }
        )
    )
