"""Does the retrieved evidence bear on the question at all? A check before any provider runs.

Retrieval always returns its nearest chunks, however far: a question about JWT tokens or a
Celery task gets Django's auth or admin pages back, and a model (or the extractive
answerer) then answers from them. Embedding scores do not tell these apart: on the dev
set the unanswerable questions' best cosine (0.36-0.63) sits inside the answerable ones'
(0.41-0.80). What does tell them apart is the thing asked about: an unanswerable question
names a product, setting or flag (`FastAPI`, `DATADOG_API_KEY`, `--turbo`) that none of
the sources mentions. So: find the names in the question and refuse when one of them
appears in no source. Ordinary words are left alone, since paraphrase ("webhook",
"cleanest") is what users do and the dense side handles it.
"""

from __future__ import annotations

import re

# A token as written: words joined by `.`, `_` or `-` stay one token (`django.contrib.otp`,
# `DATADOG_API_KEY`), with an optional `--` or `@` in front (`--turbo`, `@validate_body`).
_TOKEN = re.compile(r"(?:--|@)?[A-Za-z][A-Za-z0-9]*(?:[._-][A-Za-z0-9]+)*")
_SENTENCE_END = re.compile(r"[.!?:;]\s+")
# Capitalised function words (a question may start with any of them): never a named thing.
_COMMON = frozenset(
    [
        "how",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "is",
        "are",
        "was",
        "were",
        "can",
        "could",
        "should",
        "would",
        "do",
        "does",
        "did",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "i",
        "my",
        "we",
        "our",
        "you",
        "your",
        "it",
        "its",
        "the",
        "a",
        "an",
        "in",
        "on",
        "for",
        "with",
        "without",
        "to",
        "from",
        "of",
        "by",
        "and",
        "or",
        "but",
        "if",
        "is",
        "there",
        "any",
        "some",
        "all",
        "each",
        "every",
        "no",
        "not",
        "please",
        "also",
        "so",
    ]
)


def _is_name(token: str, sentence_start: bool) -> bool:
    bare = token.lstrip("-@")
    if token != bare:  # --flag, @decorator
        return True
    if "_" in bare:
        return True
    if "." in bare:  # django.contrib.otp, models.W042; not e.g or i.e
        return all(len(part) >= 2 for part in bare.split("."))
    letters = bare.replace("-", "")
    if len(letters) >= 2 and letters.isupper() and letters.isalpha():
        return letters.lower() not in _COMMON and len(letters) >= 3  # JWT, TOTP; not OR, I
    if any(c.isupper() for c in bare[1:]) and any(c.islower() for c in bare):
        return True  # CamelCase: FastAPI, GraphQL, WebSockets
    if bare[0].isupper() and not sentence_start and len(bare) >= 2:
        return bare.lower() not in _COMMON  # Laravel, Kubernetes, Heroku
    return False


def question_names(question: str) -> list[str]:
    """The named things a question asks about, in order, each once."""
    names: list[str] = []
    for sentence in _SENTENCE_END.split(question):
        for n, m in enumerate(_TOKEN.finditer(sentence)):
            token = m.group(0).rstrip(".-")
            if _is_name(token, sentence_start=n == 0) and token not in names:
                names.append(token)
    return names


def _mentions(text: str, name: str) -> bool:
    bare = name.lstrip("-@")
    pattern = r"(?<![\w.])" + re.escape(bare) + r"(?![\w])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def unsupported_names(question: str, contexts: list[str], ignore: frozenset[str]) -> list[str]:
    """The question's names that appear in none of `contexts` (case-insensitive, whole word).

    `ignore` (lower-case) lists names that say nothing about the topic, such as the
    product the corpus documents ("Django"): a source need not repeat them.
    """
    return [
        name
        for name in question_names(question)
        if name.lower().lstrip("-@") not in ignore
        and not any(_mentions(text, name) for text in contexts)
    ]
