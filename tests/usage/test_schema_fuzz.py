"""schemathesis against /api/schema/: no 5xx from the usage, events and entitlements endpoints,
whatever the input."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings

from licensing.services import api_key_create

# Loaded at collection (pytest-django has set Django up by then); the schema view needs no
# database. (schemathesis.pytest.from_fixture fails under pytest 9: '_nodeid'.)
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application()).include(
    path_regex=r"^/api/v1/(usage|events|entitlements)"
)


@pytest.fixture(autouse=True)
def _keep_test_connection() -> Any:
    """The WSGI app closes the database connection after each request; inside a test that would
    close the test's transaction. Django's test client disconnects the same handler."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def host_key(catalog: Any, host: Any) -> str:
    return api_key_create(host=host).key


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_it_answers_no_5xx_on_usage_endpoints(case: Any, host_key: str) -> None:
    # given any request the schema allows (and many it does not)
    # when it is sent with a host key
    response = case.call(headers={"Authorization": f"Bearer {host_key}"})

    # then the server never fails
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
