"""HTTP details fuzzing found (issue 27): a long-poll that runs out is a 202, not a 504;
a 405 names every method its path serves; the OpenAPI document declares the `provider`
names and `X-FreshRAG-Generation` values the server enforces; a model is named to
callers by a name, never by its path on the host."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import KeyStore
from api.event_bodies import PYTHON_WHITESPACE, body_schema, portable, precheck
from freshrag.cli import cli
from freshrag.generations.controller import Deployment
from freshrag.generations.pointer import Generation, model_name
from freshrag.runtime import ServerThread
from ingest.events import _ID
from retrieval.encoders import model_label, resolve_model_path
from tests.conftest import free_port, make_indexer, make_services, make_settings, upsert

A = {"Authorization": "Bearer key-a"}
SALES = {"Authorization": "Bearer key-a-sales"}
ADMIN = "key-admin"


@pytest.fixture
def app_client(tmp_path, edge_index, dense, sparse):  # noqa: ANN001, ANN201
    chain = [
        {"kind": "openai", "name": "local", "base_url": "http://127.0.0.1:1/v1", "model": "m"},
        {"kind": "extractive"},
    ]
    settings = make_settings(tmp_path, llm_chain=chain, wait_max_seconds=0.2)
    make_indexer(edge_index, dense, sparse).apply(
        [
            upsert("runbook", "# Runbook\n\nRestart the worker.", 3, tenant="acme", acl=["eng"]),
            upsert("pricing", "# Pricing\n\nTen a seat.", 1, tenant="acme", acl=["sales"]),
        ]
    )
    with TestClient(create_app(make_services(settings, edge_index, dense, sparse))) as client:
        yield client


# --- a long-poll that runs out is not a server error -----------------------------------------


@pytest.mark.model
def test_a_wait_that_runs_out_is_a_202_saying_what_is_indexed(app_client):
    r = app_client.get("/documents/runbook", params={"min_version": 5, "wait": 0.1}, headers=A)
    assert r.status_code == 202
    assert r.json() == {
        "doc_id": "runbook",
        "min_version": 5,
        "version": 3,
        "deleted": False,
        "detail": "version 5 of 'runbook' not indexed in time (indexed: version 3)",
    }
    # The wait is capped by FRESHRAG_WAIT_MAX_SECONDS (0.2 s here), whatever is asked.
    r = app_client.get("/documents/runbook", params={"min_version": 5, "wait": 60}, headers=A)
    assert r.status_code == 202
    # Reached: the document, as without a wait.
    r = app_client.get("/documents/runbook", params={"min_version": 3, "wait": 5}, headers=A)
    assert r.status_code == 200 and r.json()["version"] == 3


@pytest.mark.model
def test_a_202_tells_a_key_nothing_about_a_document_it_cannot_read(app_client):
    def pending(doc_id: str) -> dict:
        r = app_client.get(f"/documents/{doc_id}", params={"min_version": 9, "wait": 0}, headers=A)
        assert r.status_code == 202
        body = r.json()
        body["detail"] = body["detail"].replace(f"'{doc_id}'", "'X'")
        return {k: v for k, v in body.items() if k != "doc_id"}

    assert (
        pending("pricing")
        == pending("never")
        == {
            "min_version": 9,
            "version": None,
            "deleted": False,
            "detail": "version 9 of 'X' not indexed in time (indexed: nothing)",
        }
    )
    r = app_client.get("/documents/pricing", params={"min_version": 9, "wait": 0}, headers=SALES)
    assert r.status_code == 202 and r.json()["version"] == 1


@pytest.mark.model
def test_the_openapi_document_gives_the_202_and_no_504_for_waits(app_client):
    doc = app_client.get("/openapi.json").json()
    responses = doc["paths"]["/documents/{doc_id}"]["get"]["responses"]
    assert "504" not in responses and {"200", "202", "404"} <= set(responses)
    pending = responses["202"]["content"]["application/json"]["schema"]["$ref"]
    assert pending.endswith("/DocumentPending")
    assert "504" in doc["paths"]["/answer"]["post"]["responses"]  # the answer deadline


# --- 405 names every method the path serves -----------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/documents/runbook", "DELETE, GET"),
        ("PATCH", "/documents/a/b/c", "DELETE, GET"),
        ("OPTIONS", "/documents/runbook", "DELETE, GET"),
        ("GET", "/documents", "POST"),
        ("GET", "/retrieve", "POST"),
        ("DELETE", "/answer", "POST"),
        ("POST", "/healthz", "GET"),
        ("PUT", "/admin/generations", "GET, POST"),
        ("GET", "/admin/generations/standby", "DELETE"),
    ],
)
def test_a_405_names_every_method_its_path_serves(app_client, method, path, allow):
    r = app_client.request(method, path, headers=A)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow
    assert r.json() == {"detail": "Method Not Allowed"}


@pytest.mark.model
def test_every_405_matches_the_openapi_document(app_client):
    """What each path declares is exactly what its 405s allow (HEAD aside: FastAPI routes
    do not serve it)."""
    doc = app_client.get("/openapi.json").json()
    for template, operations in doc["paths"].items():
        path = template.replace("{doc_id}", "some/doc")
        declared = {m.upper() for m in operations}
        unused = next(m for m in ("PUT", "PATCH", "TRACE", "POST", "GET") if m not in declared)
        r = app_client.request(unused, path, headers=A)
        assert r.status_code == 405, (unused, path, r.text)
        assert set(r.headers["allow"].split(", ")) == declared, (path, r.headers["allow"])


# --- the OpenAPI document declares what the server enforces ----------------------------------


@pytest.mark.model
def test_provider_names_are_an_enum_and_nothing_else_is_taken(app_client):
    doc = app_client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    provider = schemas["AnswerRequest"]["properties"]["provider"]
    assert {"type": "string", "enum": ["local", "extractive"]} in provider["anyOf"]
    assert {"type": "null"} in provider["anyOf"]
    listed = [p["name"] for p in app_client.get("/providers", headers=A).json()]
    assert listed == ["local", "extractive"]
    for name in ("", "openai", "LOCAL"):
        r = app_client.post("/answer", json={"query": "restart", "provider": name}, headers=A)
        assert r.status_code == 422, (name, r.text)
        item = r.json()["detail"][0]
        assert item["loc"] == ["body", "provider"]
        assert "configured: local, extractive" in item["msg"]
    r = app_client.post("/answer", json={"query": "restart", "provider": "extractive"}, headers=A)
    assert r.status_code == 200 and r.json()["provider"] == "extractive"
    r = app_client.post("/answer", json={"query": "restart", "provider": None}, headers=A)
    assert r.status_code == 200


@pytest.mark.model
def test_the_generation_header_is_an_enum_and_nothing_else_is_taken(app_client):
    doc = app_client.get("/openapi.json").json()
    for path in ("/retrieve", "/answer"):
        (header,) = [
            p
            for p in doc["paths"][path]["post"]["parameters"]
            if p["name"].lower() == "x-freshrag-generation"
        ]
        assert header["in"] == "header" and not header.get("required")
        schema = {k: v for k, v in header["schema"].items() if k in ("type", "enum", "default")}
        assert schema == {"type": "string", "enum": ["serving", "standby"], "default": "serving"}
    body = {"query": "restart"}
    for value in ("", "blue", "Standby"):
        r = app_client.post("/retrieve", json=body, headers={**A, "X-FreshRAG-Generation": value})
        assert r.status_code == 422, (value, r.text)
        assert r.json()["detail"][0]["loc"] == ["header", "x-freshrag-generation"]
    r = app_client.post("/retrieve", json=body, headers={**A, "X-FreshRAG-Generation": "serving"})
    assert r.status_code == 200 and r.json()["hits"]
    # Declared, so not refused: this server has no standby (a 409 the document lists).
    r = app_client.post("/retrieve", json=body, headers={**A, "X-FreshRAG-Generation": "standby"})
    assert r.status_code == 409


@pytest.mark.model
def test_what_the_schema_calls_an_integer_or_a_query_is_taken(app_client):
    """JSON Schema reads 3.0 as the integer 3 and a query of only a control character as
    not blank; so does the server (true, "3" and 3.5 stay refused)."""
    ok = {
        "query": "restart",
        "top_k": 3.0,
        "filters": {"version": 3.0, "chunk_index": {"gte": 0.0}},
    }
    r = app_client.post("/retrieve", json=ok, headers=A)
    assert r.status_code == 200 and r.json()["hits"][0]["doc_id"] == "runbook", r.text
    assert app_client.post("/retrieve", json={"query": " \x1c "}, headers=A).status_code == 200
    for bad, loc in [
        ({"query": "x", "top_k": 3.5}, ["body", "top_k"]),
        ({"query": "x", "top_k": True}, ["body", "top_k"]),
        ({"query": " \t\n"}, ["body", "query"]),
        (
            {"query": "x", "filters": {"metadata.lang\n": "en"}},
            ["body", "filters", "metadata.lang\n"],
        ),
        ({"query": "x", "filters": {"version": 2.5}}, ["body", "filters", "version"]),
    ]:
        r = app_client.post("/retrieve", json=bad, headers=A)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, (bad, r.text)
    r = app_client.post("/answer", json={"query": "restart", "stream": "true"}, headers=A)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "stream"]


@pytest.mark.model
def test_an_unknown_prompt_is_not_found_rather_than_invalid(app_client):
    for prompt in ({"name": "nope"}, {"version": 99}, {"label": "beta"}):
        r = app_client.post("/answer", json={"query": "restart", "prompt": prompt}, headers=A)
        assert r.status_code == 404, (prompt, r.text)
    doc = app_client.get("/openapi.json").json()
    assert "404" in doc["paths"]["/answer"]["post"]["responses"]


@pytest.mark.model
def test_no_parameter_is_declared_nullable(app_client):
    """A parameter is text or absent: `null` in its schema would invite the text 'null'."""
    doc = app_client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                assert {"type": "null"} not in parameter["schema"].get("anyOf", []), (
                    method,
                    path,
                    parameter["name"],
                )
    documents = doc["paths"]["/documents/{doc_id}"]["get"]["parameters"]
    (min_version,) = [p for p in documents if p["name"] == "min_version"]
    assert min_version["schema"]["type"] == "integer" and min_version["schema"]["minimum"] == 0
    assert min_version["schema"]["format"] == "int64"
    r = app_client.get("/documents/runbook", params={"min_version": "null"}, headers=A)
    assert r.status_code == 422
    r = app_client.get("/documents/runbook", params={"min_version": 2**63}, headers=A)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "min_version"]


@pytest.mark.unit
def test_publish_bodies_are_checked_as_their_schema_says():
    event = {"op": "upsert", "doc_id": "a", "content": "x"}
    assert precheck({**event, "version": 7.0}) == ({**event, "version": 7}, [])
    for field, value in [
        ("event_time", 0),
        ("event_time", "2026-12-07"),
        ("event_time", "2026-12-07T06:00:00"),  # RFC 3339 needs the offset
        ("event_time", "0000-01-01T00:00:00Z"),
        ("content_base64", "QUJD=="),  # stray padding Python's decoder would let through
        ("content_base64", "QUJD\n"),
    ]:
        _, problems = precheck({**event, "version": 1, field: value})
        assert [p[0] for p in problems] == [field], (field, value)
    assert precheck({**event, "version": 1, "event_time": "2026-12-07t06:00:00.5+01:00"})[1] == []
    schema = body_schema()["anyOf"][0]
    assert schema["properties"]["tenant"]["readOnly"] is True
    assert schema["properties"]["metadata"]["additionalProperties"] is False
    assert schema["properties"]["version"]["format"] == "int64"
    assert "maximum" not in schema["properties"]["version"]


@pytest.mark.unit
def test_id_patterns_say_what_python_checks_in_every_dialect():
    """The ids' `\\s` is Python's set, spelled out: JSON Schema's and Rust's differ."""
    spelled = re.compile(f"[{PYTHON_WHITESPACE}]")
    assert all(
        bool(spelled.match(chr(c))) is bool(re.match(r"\s", chr(c))) for c in range(0x110000)
    )
    pattern = portable(_ID)
    assert "\\s" not in pattern
    for text in ["a", "a b", "\ufeffa", "a\x85", "a\x1c", "\u3000a", "a\n", " a", "é"]:
        assert bool(re.fullmatch(pattern, text)) is bool(re.fullmatch(_ID, text)), repr(text)
        assert bool(re.fullmatch(pattern, text)) is (text in ("a", "a b", "\ufeffa", "é"))


# --- a model is named, never located ------------------------------------------------------------


@pytest.mark.unit
def test_a_model_from_a_folder_is_named_by_the_folder(tmp_path: Path):
    folder = tmp_path / "srv" / "minilm-copy"
    folder.mkdir(parents=True)
    assert model_label(str(folder)) == "minilm-copy"
    assert model_label(f"{folder}/") == "minilm-copy"
    assert model_label("/opt/not/here/mpnet") == "mpnet"  # a path, even one not on this host
    assert model_label("./models/e5") == "e5"
    # Hub names are names.
    assert model_label("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert model_label("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"


@pytest.mark.unit
def test_the_operator_name_is_for_the_configured_model_only(tmp_path: Path):
    path = str(tmp_path / "srv" / "minilm-copy")
    settings = make_settings(tmp_path, model=path, model_name="team-minilm")
    same = Generation("g1", path, "c", "r", "g")
    other = Generation("g2", "/srv/models/all-mpnet-base-v2", "c2", "r2", "g2")
    assert model_name(settings, same) == "team-minilm"
    assert model_name(settings, other) == "all-mpnet-base-v2"
    assert model_name(make_settings(tmp_path, model=path), same) == "minilm-copy"


@pytest.mark.model
@pytest.mark.parametrize(
    ("given", "shown"), [(None, "minilm-copy"), ("team-minilm", "team-minilm")]
)
def test_callers_never_see_the_model_path(tmp_path: Path, given: str | None, shown: str):
    """The issue's case: a model installed from a folder (here a link to the bundled
    MiniLM, named as an operator would) is named in hits, /readyz, /admin/generations and
    `freshrag reindex`, and its path appears in none of them."""
    folder = tmp_path / "srv" / "models" / "minilm-copy"
    folder.parent.mkdir(parents=True)
    os.symlink(resolve_model_path("all-MiniLM-L6-v2"), folder)
    keys = {
        "key-a": {"tenant": "acme", "groups": ["eng"]},
        ADMIN: {"tenant": "acme", "groups": ["eng"], "admin": True},
    }
    settings = make_settings(
        tmp_path, api_keys=keys, ingest_process=False, model=str(folder), model_name=given
    )
    dep = Deployment.open(settings, run_workers=False)
    services = dep.services(KeyStore(keys))
    make_indexer(dep.core.index, dep.core.dense, dep.core.sparse).apply(
        [upsert("runbook", "# Runbook\n\nRestart the worker.", 1, tenant="acme", acl=["eng"])]
    )
    server = ServerThread(create_app(services), "127.0.0.1", free_port()).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            hits = http.post("/retrieve", json={"query": "restart"}, headers=A).json()["hits"]
            ready = http.get("/readyz").json()
            ready = ready.get("detail", ready)  # a 503 (no broker here) carries the same
            admin = http.get("/admin/generations", headers={"X-API-Key": ADMIN})
            replies = [str(hits), str(ready), admin.text]
        printed = CliRunner().invoke(cli, ["reindex", "--url", server.url, "--api-key", ADMIN])
    finally:
        server.stop()
        dep.close()
    assert hits and {h["model"] for h in hits} == {shown}
    assert ready["details"]["model"] == shown
    assert ready["details"]["generations"]["serving"]["model"] == shown
    assert admin.status_code == 200 and admin.json()["serving"]["model"] == shown
    assert printed.exit_code == 0, printed.output
    assert f"serving  g1  {shown}  (" in printed.output
    for text in [*replies, printed.output]:
        assert str(tmp_path) not in text and "/srv/" not in text
