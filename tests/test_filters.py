import pytest

from retrieval.filters import FilterError, access_conditions, parse_filters
from retrieval.index import Match, MatchAny, Range


def test_equality_any_of_and_range():
    conds = parse_filters(
        {"doc_id": "a", "metadata.lang": ["en", "de"], "version": {"gte": 2, "lt": 5}}
    )
    assert conds == [
        Match("doc_id", "a"),
        MatchAny("metadata.lang", ("en", "de")),
        Range("version", gte=2.0, lt=5.0),
    ]


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ({"tenant": "other"}, "API key"),
        ({"acl": ["admins"]}, "API key"),
        ({"colour": "red"}, "unknown filter field 'colour'"),
        ({"metadata.a b": "x"}, "unknown filter field"),
        ({"version": {"between": 1}}, "range"),
        ({"version": {"gte": "2"}}, "number"),
        ({"doc_id": []}, "any-of"),
        ({"metadata.x": ["a", 1]}, "all strings"),
        ({"metadata.x": {"gte": None}}, "number"),
        ({"metadata.x": 1.5}, "strings, integers"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(filters, fragment):
    with pytest.raises(FilterError, match=fragment):
        parse_filters(filters)


def test_access_conditions_come_from_credentials():
    assert access_conditions("acme", ["eng"]) == [
        Match("tenant", "acme"),
        MatchAny("acl", ("eng",)),
    ]
    # A key with no groups matches no document rather than every document.
    assert access_conditions("acme", [])[1].values == ("\x00no-group",)


@pytest.mark.parametrize(
    ("filters", "fragment"),
    [
        ({"version": "50208"}, "must be integers"),
        ({"chunk_index": [1, "2"]}, "must be integers"),
        ({"version": True}, "must be integers"),
        ({"doc_id": 7}, "must be strings"),
        ({"title": {"gte": 1}}, "numeric field"),
    ],
)
def test_typed_fields_reject_values_that_could_never_match(filters, fragment):
    with pytest.raises(FilterError, match=fragment):
        parse_filters(filters)
