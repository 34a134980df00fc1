import pytest

from retrieval.filters import FilterError, access_conditions, parse_filters
from retrieval.search import Principal, Retriever
from retrieval.store.types import Match, MatchAny, Not, Prefix, Range
from tests.conftest import make_indexer, upsert


@pytest.mark.unit
def test_equality_any_of_and_range():
    conds = parse_filters(
        {"doc_id": "a", "metadata.lang": ["en", "de"], "version": {"gte": 2, "lt": 5}}
    )
    assert conds == [
        Match("doc_id", "a"),
        MatchAny("metadata.lang", ("en", "de")),
        Range("version", gte=2.0, lt=5.0),
    ]


@pytest.mark.unit
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
        ({"doc_id": {"prefix": ""}}, "1 to 512 characters"),
        ({"doc_id": {"prefix": ["a/"]}}, "1 to 512 characters"),
        ({"version": {"prefix": "1"}}, "needs a string field"),
        ({"doc_id": {"not": {"prefix": "a"}}}, "'not' takes a value"),
        ({"doc_id": {"not": []}}, "any-of"),
        ({"doc_id": {"suffix": "x"}}, "not, prefix, not_prefix"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(filters, fragment):
    with pytest.raises(FilterError, match=fragment):
        parse_filters(filters)


@pytest.mark.unit
def test_access_conditions_come_from_credentials():
    assert access_conditions("acme", ["eng"]) == [
        Match("tenant", "acme"),
        MatchAny("acl", ("eng",)),
    ]
    # A key with no groups matches no document rather than every document.
    assert access_conditions("acme", [])[1].values == ("\x00no-group",)


@pytest.mark.unit
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


@pytest.mark.unit
def test_negation_and_prefix():
    conds = parse_filters(
        {
            "doc_id": {"prefix": "topics/", "not_prefix": "topics/old/"},
            "metadata.doc_type": {"not": ["release-notes", "internals"]},
            "version": {"gte": 2, "not": 5},
        }
    )
    assert conds == [
        Prefix("doc_id", "topics/"),
        Not(Prefix("doc_id", "topics/old/")),
        Not(MatchAny("metadata.doc_type", ("release-notes", "internals"))),
        Range("version", gte=2.0),
        Not(Match("version", 5)),
    ]


@pytest.mark.model
def test_release_notes_can_be_excluded_by_prefix_or_type(index, dense, sparse):
    """On both engines: a caller keeps release notes out of the results, or asks for them only."""
    pages = {
        "releases/5.2": "release-notes",
        "releases/5.1": "release-notes",
        "topics/email": "guide",
        "ref/settings": "reference",
    }
    make_indexer(index, dense, sparse).apply(
        [
            upsert(
                doc_id,
                f"# {doc_id}\n\nSending email through the SMTP backend.",
                1,
                metadata={"doc_type": kind},
            )
            for doc_id, kind in pages.items()
        ]
    )
    retriever = Retriever(index, dense, sparse)
    who = Principal("k", "default", ("public",))

    def found(filters: dict) -> set[str]:
        hits = retriever.retrieve(who, "email backend", 10, "hybrid", parse_filters(filters))
        return {h.payload["doc_id"] for h in hits}

    assert found({}) == set(pages)
    assert found({"doc_id": {"not_prefix": "releases/"}}) == {"topics/email", "ref/settings"}
    assert found({"doc_id": {"prefix": "releases/"}}) == {"releases/5.2", "releases/5.1"}
    assert found({"metadata.doc_type": {"not": "release-notes"}}) == {
        "topics/email",
        "ref/settings",
    }
    assert found({"metadata.doc_type": {"not": ["release-notes", "guide"]}}) == {"ref/settings"}
    assert found({"doc_id": {"prefix": "releases/", "not": "releases/5.1"}}) == {"releases/5.2"}
    assert found({"metadata.missing": {"not": "x"}}) == set(pages)  # no field: kept
