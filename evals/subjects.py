"""Does a question name its subject? A rule, so that every set can be scored in two parts.

A model tuned on a corpus's own headings learns to match the names in them: in issue 29's
trial a tuned MiniLM gained on questions that name what they ask about and lost on
paraphrases that avoid the names. One average hides that trade, so each set is scored
twice: questions that name their subject, and questions that paraphrase it.

A question names its subject when it shares, with the gold page's title or a gold
section's heading, an identifier (a code-like token: `backticks`, under_scores,
dotted.names, calls(), CamelCase) or a content word (not a stopword, after light
stemming). The project's own name is on most of its pages, so sharing it names nothing.
The held-out FAQ's neutral headings (`Entry 3`) are not titles: what they replaced, the
question, is exactly what that set keeps out of the index.

Set writers' labels (`EvalItem.phrasing`) win over the rule; on a labelled set the rule's
agreement with them says how far to trust it on the unlabelled ones. Pure functions: the
caller reads the pages.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

from evals.dataset import HELDOUT_HEADING, EvalItem
from ingest.parser import Element, parse

# The projects whose documentation the shipped sets ask about.
PROJECT_WORDS = frozenset({"django", "sphinx"})

# English function words, plus the verbs every how-to question carries ("how do I get X to
# work", "can I use Y"): sharing one of them with a heading names nothing.
_STOPWORDS = """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can cannot could did do does doing done down during each
    else even ever every few for from further get gets getting got had has have having he her
    here hers him his how i if in instead into is it its itself just let like made make makes
    making may me might more most much must my myself need needs no nor not now of off on once
    one only or other our ours out over own same say see she should so some still such than
    that the their theirs them then there these they thing things this those through to too
    under until up upon us use used uses using very want wants was way we well were what when
    where whether which while who whom why will with within without work works would yes yet
    you your yours
"""
STOPWORDS = frozenset(_STOPWORDS.split())

_BACKTICKED = re.compile(r"`+([^`]+)`+")
_IDENTIFIER = re.compile(
    r"[A-Za-z_][\w.]*\([^()]*\)"  # calls: save(), get_or_create(defaults=None)
    r"|\w*[A-Za-z]\w*(?:\.\w+)+"  # dotted: conf.py, sphinx.ext.autodoc
    r"|\w*_\w+"  # under_scores: html_theme, __init__
    r"|[A-Za-z]*[a-z][A-Z]\w*"  # CamelCase: QuerySet, LaTeX
)
_WORD = re.compile(r"[a-z0-9]+")
_NEUTRAL = re.compile("^" + re.escape(HELDOUT_HEADING).replace(r"\{k\}", r"\d+") + "$")


def stem(word: str) -> str:
    """Light suffix stripping, so 'references', 'referencing' and 'reference' meet.

    Deliberately weaker than Porter: one plural, one of a few suffixes, a final 'e'; a
    stem keeps at least three letters, so short words stay whole.
    """
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ation", "ing", "able", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def identifiers(text: str) -> set[str]:
    """Code-like tokens, lower-cased and without call arguments; a dotted name also by its
    last part, since 'models.ForeignKey' and 'ForeignKey' name the same thing."""
    raw = _BACKTICKED.findall(text) + _IDENTIFIER.findall(_BACKTICKED.sub(" ", text))
    out: set[str] = set()
    for token in raw:
        name = re.sub(r"\(.*", "", token.strip().lower()).strip(".:-")
        if any(len(part) > 1 for part in name.split(".")):  # not "e.g"
            out |= {name, name.rsplit(".", 1)[-1]}
    return out


def content_words(text: str, ignore: Collection[str] = PROJECT_WORDS) -> set[str]:
    """Stems of the words that can carry a subject (identifiers split into their words)."""
    words = _WORD.findall(text.lower())
    return {stem(w) for w in words if len(w) > 1 and w not in STOPWORDS and w not in ignore}


def names_subject(
    question: str, titles: Iterable[str], ignore: Collection[str] = PROJECT_WORDS
) -> bool:
    """True when the question shares an identifier or a content word with the titles."""
    titles = [t for t in titles if t and not _NEUTRAL.match(" ".join(t.split()))]
    heading = " ".join(titles)
    if identifiers(question) & identifiers(heading):
        return True
    return bool(content_words(question, ignore) & content_words(heading, ignore))


def page_title(elements: Iterable[Element]) -> str:
    """A page's title as FreshRAG parses it: its first heading ('' if it has none)."""
    return next((" ".join(e.text.split()) for e in elements if e.category == "Title"), "")


def page_titles(pages: Mapping[str, str], mime: str = "text/x-rst") -> dict[str, str]:
    """doc_id → title, from the pages' text (the caller reads the files)."""
    return {doc_id: page_title(parse(text, mime)) for doc_id, text in pages.items()}


def item_titles(item: EvalItem, titles: Mapping[str, str]) -> list[str]:
    """The gold pages' titles and the gold sections' headings (held-out neutral ones left
    out by `names_subject`); a gold page missing from `titles` contributes its heading only."""
    pages = item.gold_doc_ids or [c.split("#", 1)[0] for c in item.gold_contexts]
    out = [titles.get(d, "") for d in dict.fromkeys(pages)]
    return out + [c.split("#", 1)[1] for c in item.gold_contexts if "#" in c]


def is_named(item: EvalItem, titles: Mapping[str, str]) -> bool:
    """The writer's label when there is one, else the rule."""
    if item.phrasing is not None:
        return item.phrasing == "named"
    return names_subject(item.question, item_titles(item, titles))


def split(
    items: Iterable[EvalItem], titles: Mapping[str, str]
) -> tuple[list[EvalItem], list[EvalItem]]:
    """(named, paraphrased), each in the set's order."""
    named: list[EvalItem] = []
    paraphrased: list[EvalItem] = []
    for item in items:
        (named if is_named(item, titles) else paraphrased).append(item)
    return named, paraphrased


def agreement(items: Iterable[EvalItem], titles: Mapping[str, str]) -> tuple[int, int]:
    """(labelled items where the rule gives the label, labelled items)."""
    labelled = [i for i in items if i.phrasing is not None]
    agree = sum(
        names_subject(i.question, item_titles(i, titles)) == (i.phrasing == "named")
        for i in labelled
    )
    return agree, len(labelled)
