"""Every answer carries X-Request-ID (the caller's valid one, or a new one), error answers
included, and every log line written while serving a request carries the same id."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from django.test import Client

from config.logs import logging_config

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger's lines as the production formatter renders them (LOG_FORMAT=json)."""
    spec = dict(logging_config(level="INFO", fmt="json")["formatters"]["structured"])
    formatter_class = spec.pop("()")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_class(**spec))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous_level)


def _parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.django_db
def test_it_gives_every_answer_a_new_request_id(client: Client) -> None:
    first = client.get("/healthz")
    second = client.get("/healthz")

    assert HEX_ID.fullmatch(first["X-Request-ID"])
    assert HEX_ID.fullmatch(second["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
def test_it_keeps_a_valid_incoming_request_id(client: Client) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a:42.retry_1"})

    assert response["X-Request-ID"] == "lb-7f3a:42.retry_1"


@pytest.mark.django_db
@pytest.mark.parametrize("incoming", ["has space", "x" * 129, "quote\"d", "ünïcode"])
def test_it_replaces_an_invalid_incoming_request_id(client: Client, incoming: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": incoming})

    assert HEX_ID.fullmatch(response["X-Request-ID"])


@pytest.mark.django_db
def test_an_api_error_answer_carries_the_request_id_and_its_log_lines_too(
    client: Client, json_lines: io.StringIO
) -> None:
    # when: a usage batch without a key
    response = client.post("/api/v1/usage", {"records": []}, content_type="application/json")

    # then
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    request_id = response["X-Request-ID"]
    assert HEX_ID.fullmatch(request_id)
    lines = _parsed(json_lines)
    assert sorted(line["event"] for line in lines) == ["Unauthorized: /api/v1/usage", "request"]
    assert {line["request_id"] for line in lines} == {request_id}
    request_line = next(line for line in lines if line["event"] == "request")
    assert (request_line["method"], request_line["path"], request_line["status"]) == (
        "POST",
        "/api/v1/usage",
        401,
    )
    assert request_line["level"] == "info"
    assert request_line["logger"] == "tollgate.request"


@pytest.mark.django_db
def test_a_404_answer_carries_the_request_id(client: Client, json_lines: io.StringIO) -> None:
    response = client.get("/no/such/page", headers={"X-Request-ID": "trace-404"})

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "Not found.", "fields": {}}
    }
    assert response["X-Request-ID"] == "trace-404"
    assert {line["request_id"] for line in _parsed(json_lines)} == {"trace-404"}


@pytest.mark.django_db
@pytest.mark.urls("tests.ops.urls")
def test_an_unhandled_error_answers_500_with_the_request_id_and_logs_the_traceback_with_it(
    json_lines: io.StringIO,
) -> None:
    client = Client(raise_request_exception=False)

    response = client.get("/test-boom", headers={"X-Request-ID": "trace-500"})

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert response["X-Request-ID"] == "trace-500"
    lines = _parsed(json_lines)
    assert {line["request_id"] for line in lines} == {"trace-500"}
    error = next(line for line in lines if line["level"] == "error")
    assert error["logger"] == "django.request"
    assert "RuntimeError: boom: a bug in a view" in error["exception"]


@pytest.mark.django_db
def test_probes_are_logged_at_debug_level_only(client: Client, json_lines: io.StringIO) -> None:
    client.get("/healthz")
    client.get("/metrics")

    assert _parsed(json_lines) == []


@pytest.mark.django_db
def test_nothing_of_a_request_stays_bound_after_it(client: Client) -> None:
    client.get("/healthz", headers={"X-Request-ID": "trace-gone"})

    assert structlog.contextvars.get_contextvars() == {}
