"""The named-thing check that refuses before any provider runs (pure logic, no index)."""

import pytest

from retrieval.answer.evidence import question_names, unsupported_names

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("question", "names"),
    [
        ("How do I issue JWT tokens with django.contrib.auth?", ["JWT", "django.contrib.auth"]),
        ("What does the --turbo flag of manage.py migrate do?", ["--turbo", "manage.py"]),
        ("How do I set DATADOG_API_KEY for Datadog?", ["DATADOG_API_KEY", "Datadog"]),
        ("Does FastAPI or GraphQL work here?", ["FastAPI", "GraphQL"]),
        ("Where is @validate_body defined?", ["@validate_body"]),
        ("Can I deploy on Heroku? Which Procfile?", ["Heroku", "Procfile"]),
        # Words that start a sentence, short capitals and abbreviations are not names.
        ("How do I filter for A OR B, e.g. by date?", []),
        ("Why are controllers called views? What is cleanest?", []),
        ("models.W042 keeps showing", ["models.W042"]),
    ],
)
def test_question_names(question, names):
    assert question_names(question) == names


def test_a_name_no_source_mentions_is_unsupported():
    sources = ["Use the DEBUG setting. Run manage.py migrate to apply migrations."]
    assert unsupported_names(
        "What does the --turbo flag of manage.py migrate do?", sources, frozenset()
    ) == ["--turbo"]
    assert unsupported_names("Is DEBUG needed with manage.py?", sources, frozenset()) == []


def test_matching_is_whole_word_and_case_insensitive():
    sources = ["Celery-free: the sparkly cache is kept in redis."]
    assert unsupported_names("Does it need Redis?", sources, frozenset()) == []
    # `Spark` inside `sparkly` is not a mention; `Celery` before a hyphen is.
    assert unsupported_names("Can Spark read it, or Celery?", sources, frozenset()) == ["Spark"]


def test_ignored_names_need_no_mention():
    sources = ["Views are callables that take a request."]
    question = "How do Django views get their request?"
    assert unsupported_names(question, sources, frozenset()) == ["Django"]
    assert unsupported_names(question, sources, frozenset({"django"})) == []
