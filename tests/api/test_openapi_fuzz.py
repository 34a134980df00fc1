"""Schemathesis against the real app: whatever it sends, no 5xx, and every reply is one the
OpenAPI document describes (status, content type, headers, body schema). Bounded: 25
generated requests per operation and mode.

Driven through `as_strategy` rather than `schemathesis.pytest.from_fixture`, whose lazy
loader does not run under pytest 9 (it sets `Node._nodeid`, which pytest 9 removed).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from tests.conftest import make_indexer, make_services, make_settings, upsert

pytestmark = pytest.mark.model

AUTH = {"Authorization": "Bearer key-a"}


@schemathesis.check
def no_undocumented_server_error(ctx, response, case) -> None:  # noqa: ANN001
    """A 500 never; another 5xx only where documented (503 busy, 504 wait ran out)."""
    documented = case.operation.definition.raw.get("responses", {})
    if response.status_code >= 500 and (
        response.status_code == 500 or str(response.status_code) not in documented
    ):
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")


CHECKS = [
    no_undocumented_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/retrieve"),
    ("POST", "/answer"),
    ("GET", "/prompts"),
    ("GET", "/providers"),
    ("GET", "/documents/{doc_id}"),
    ("POST", "/documents"),
    ("DELETE", "/documents/{doc_id}"),
    ("GET", "/admin/generations"),
    ("POST", "/admin/generations"),
    ("POST", "/admin/generations/switch"),
    ("DELETE", "/admin/generations/standby"),
    ("GET", "/usage"),
]
# Derandomized: the same 25 examples per operation on every run, so CI is reproducible;
# run with --hypothesis-seed=random locally to explore further.
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def api_schema(tmp_path, edge_index, dense, sparse):  # noqa: ANN001, ANN201
    # No broker (the default bootstrap is a closed port): an event that passes every check
    # is a 503, documented. key-a may publish, so the checks before it are fuzzed too.
    config = make_settings(
        tmp_path,
        max_top_k=20,
        max_query_chars=200,
        wait_max_seconds=0.2,
        api_keys={"key-a": {"tenant": "acme", "groups": ["eng"], "publish": True}},
    )
    make_indexer(edge_index, dense, sparse).apply(
        [
            upsert("runbook", "# Runbook\n\nRestart the worker.", 1, tenant="acme", acl=["eng"]),
            upsert("guide", "# Guide\n\nDrain, then restart.", 2, tenant="acme", acl=["eng"]),
        ]
    )
    services = make_services(config, edge_index, dense, sparse)
    services.broker_ready = lambda: True  # no broker here; /readyz's 503 is tested elsewhere
    app = create_app(services)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(api_schema):
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_api_answers_what_its_openapi_document_says(api_schema, method, path):
    operation = api_schema[path][method]
    has_input = bool(operation.body) or any(
        p.location in ("path", "query") for p in operation.iter_parameters()
    )

    @BOUNDED
    @given(case=operation.as_strategy(GenerationMode.POSITIVE, headers=AUTH))
    def positive(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS)

    @BOUNDED
    @given(case=operation.as_strategy(GenerationMode.NEGATIVE, headers=AUTH))
    def negative(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=AUTH, checks=[*CHECKS, negative_data_rejection])

    positive()
    if has_input:
        negative()
