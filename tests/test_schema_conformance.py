"""schemathesis over the whole OpenAPI schema, with a host key and with a licensor key: every
answer is documented (its status code among the operation's responses, its content type and body
as the schema says) and none is a 5xx. The 4xx answers come from
licensing.schema.TollgateAutoSchema, so this checks more than the absence of server errors
(docs/security.md)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing.models import Settlement
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor
from licensing.services import api_key_create
from tests.billing.conftest import minimax_catalog, post_usage, record, run_billing, settlement_of

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# An NDJSON body is documented as a string (its lines): sent as that text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")

# Loaded at collection (pytest-django has set Django up by then); the schema view needs no
# database. Only the REST API: the schema and docs views are not part of it.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application()).include(
    path_regex=r"^/api/v1/"
)


@pytest.fixture
def _keep_test_connection(billed: Settlement) -> Any:
    """The WSGI app closes the database connection after each request; inside a test that would
    close the test's transaction. Django's test client disconnects the same handler, and connects
    it again after each of its requests: hence after `billed`, which posts through it."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def billed(db: None) -> Settlement:
    """A draft settlement of fireworks with MiniMax, so that lists and details have content."""
    from rest_framework.test import APIClient

    catalog_import(minimax_catalog())
    client = APIClient()
    host = Host.objects.get(slug="fireworks")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(host=host).key}")
    post_usage(client, [record("c-1", revenue="1000.00", customer_ref="acme")])
    run_billing("2026-10")
    return settlement_of(licensor="minimax", host="fireworks", period="2026-10")


@pytest.fixture(params=["host", "licensor"])
def key(request: pytest.FixtureRequest, billed: Settlement, _keep_test_connection: None) -> str:
    if request.param == "host":
        return api_key_create(host=Host.objects.get(slug="fireworks")).key
    return api_key_create(licensor=Licensor.objects.get(slug="minimax")).key


@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_is_documented(case: Any, key: str) -> None:
    # given any request the schema allows (and many it does not), with a host or a licensor key
    # when / then: status, content type, headers and body as documented; never a 5xx
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/settlements/{settlement_id}"),
        ("GET", "/api/v1/settlements/{settlement_id}/statement.csv"),
        ("POST", "/api/v1/settlements/{settlement_id}/approve"),
        ("POST", "/api/v1/settlements/{settlement_id}/dispute"),
    ],
)
def test_the_answers_about_a_real_settlement_are_documented(
    billed: Settlement, key: str, method: str, path: str
) -> None:
    # given: the operation on an existing settlement (random ids only ever find nothing); the
    # dispute comes after nothing, or after its approval in the next case (409)
    operation = schema[path][method]
    extra = {"body": {"reason": "not our traffic"}} if path.endswith("dispute") else {}
    for _ in range(2):  # the second time: approved already, disputed already (409)
        case = operation.Case(path_parameters={"settlement_id": str(billed.pk)}, **extra)

        # when / then
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
