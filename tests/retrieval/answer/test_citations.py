"""What counts as a citation: bracketed numbers in prose, never indexing in code."""

from __future__ import annotations

import pytest

from retrieval.answer.citations import (
    CitationError,
    check_partial,
    citation_numbers,
    cited_sources,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("Use select_related [2].", [2]),
        ("Both apply [1][3], see also [2].", [1, 3, 2]),
        ("Set `null=True` and `blank=True` [1, 4].", [1, 4]),
        ("The first item is `a[0]` [1].", [1]),
        ("Call items[3] to get it [2].", [2]),  # an index after a name
        ("m[3][1] picks a cell [1].", [1]),
        ("f(x)[2] is the third value [3].", [3]),
        ("```python\nrow = rows[1]\nfirst = row[0]\n```\nThat reads the row [4].", [4]),
        ("~~~\nx[2]\n~~~\nAs shown [1].", [1]),
        ("Sources: [12].", [12]),
        ("No citation here.", []),
        ("Array [1000] is not a source number.", []),
    ],
)
def test_citation_numbers(text: str, numbers: list[int]) -> None:
    assert citation_numbers(text) == numbers


def test_code_that_indexes_does_not_fail_a_grounded_answer() -> None:
    """`a[0]` in quoted code was read as citing source 0 and turned the answer into a refusal."""
    answer = "Slice the queryset with `qs[0]` to get the first row [2]."
    assert cited_sources(answer, 3) == [2]


def test_an_in_range_index_in_code_is_not_a_citation() -> None:
    with pytest.raises(CitationError, match="cites no source"):
        cited_sources("Read it with `m[3]` or m[3].", 5)


def test_out_of_range_and_missing_citations_are_errors() -> None:
    with pytest.raises(CitationError, match=r"cites \[7\]"):
        cited_sources("It is configurable [7].", 5)
    with pytest.raises(CitationError, match="cites no source"):
        cited_sources("It is configurable.", 5)
    assert cited_sources("First [2], then [1] and [2] again.", 3) == [2, 1]


# --- streamed answers: checked as they arrive ----------------------------------------------


@pytest.mark.parametrize(
    "partial",
    [
        "Send SIGTERM [2] then [",  # a citation still being written
        "It applies [1, 7",  # its closing bracket has not come yet
        "Call `items[7]",  # an open code span: may yet close around it
        "```python\nrow = rows[7]\n",  # an open fence
        "Read `qs[7]` and then items[7] as well",  # code, and an index after a name
    ],
)
def test_what_may_still_turn_out_fine_is_not_judged_yet(partial: str) -> None:
    check_partial(partial, 2)


@pytest.mark.parametrize(
    "partial",
    [
        "Send SIGTERM [7]",
        "It applies [1, 7]",
        "Read `qs[0]` then see [3]",
        "```\nx[9]\n```\nAs shown [4]",
    ],
)
def test_a_complete_citation_outside_the_sources_fails_as_soon_as_it_arrives(
    partial: str,
) -> None:
    with pytest.raises(CitationError, match="only sources 1..2"):
        check_partial(partial, 2)


def test_no_prefix_of_a_grounded_answer_fails() -> None:
    answer = "Slice with `qs[0]` [2], or:\n```\nrows[5]\n```\nThen commit [1][2]."
    assert cited_sources(answer, 2) == [2, 1]
    for end in range(len(answer) + 1):
        check_partial(answer[:end], 2)
