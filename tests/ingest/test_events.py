import json

import pytest

from ingest.events import SCHEMA_PATH, DocumentEvent, MalformedEvent, decode_event, json_schema

pytestmark = pytest.mark.unit


def test_valid_event_roundtrips_and_keys_by_doc_id():
    e = DocumentEvent(
        op="upsert", doc_id="a/b.md", version=3, content="hi", metadata={"lang": "en"}
    )
    again = decode_event(e.to_bytes())
    assert again == e
    assert e.key() == b"a/b.md"
    assert e.acl is None and e.readers == ["public"] and e.tenant == "default"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"op": "rename", "doc_id": "a", "version": 1, "content": "x"}).encode(), "op"),
        (json.dumps({"op": "upsert", "version": 1, "content": "x"}).encode(), "doc_id"),
        (
            json.dumps({"op": "upsert", "doc_id": "a", "version": -1, "content": "x"}).encode(),
            "version",
        ),
        (json.dumps({"op": "upsert", "doc_id": "a", "version": 1}).encode(), "content"),
        (
            json.dumps({"op": "delete", "doc_id": "a", "version": 1, "colour": "red"}).encode(),
            "colour",
        ),
        (None, "empty"),
    ],
)
def test_malformed_events_say_what_is_wrong(raw, fragment):
    with pytest.raises(MalformedEvent, match=fragment):
        decode_event(raw)


def test_delete_needs_no_body():
    assert decode_event(b'{"op": "delete", "doc_id": "a", "version": 2}').op == "delete"


def test_schema_file_matches_the_model():
    assert json.loads(SCHEMA_PATH.read_text()) == json_schema(), "run: python -m ingest.events"
