"""Every API and webhook error is the JSON error shape (docs/security.md, finding 12): a bad
Host header, an oversized webhook body and any other 400 that Django itself answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import HostFactory


def assert_error_shape(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code, body
    return body


@pytest.mark.parametrize("path", ["/api/v1/models", "/webhooks/stripe", "/api/v1/nowhere"])
def test_a_bad_host_header_is_a_json_400(db: None, path: str) -> None:
    # given / when a request names a Host that is not in ALLOWED_HOSTS
    response = APIClient().get(path, HTTP_HOST="attacker.example")

    # then the JSON error shape, not Django's HTML page
    body = assert_error_shape(response, 400, "bad_request")
    assert "attacker.example" not in json.dumps(body)


def test_an_oversized_webhook_body_is_a_json_413(db: None, settings: Any) -> None:
    # given a webhook secret, and a body beyond DATA_UPLOAD_MAX_MEMORY_SIZE
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test"
    body = b'{"id": "evt_1", "pad": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + b'"}'

    # when it is posted to the Stripe webhook
    response = APIClient().post(
        "/webhooks/stripe", data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE="t=1"
    )

    # then 413 in the JSON error shape
    assert_error_shape(response, 413, "payload_too_large")


def test_the_400_handler_answers_json(rf: Any) -> None:
    # given the project's handler400 (Django calls it for a SuspiciousOperation)
    from django.core.exceptions import SuspiciousOperation
    from django.urls import get_resolver

    handler = get_resolver().resolve_error_handler(400)

    # when it answers
    response = handler(rf.get("/"), SuspiciousOperation("bad"))

    # then JSON
    assert response.status_code == 400
    assert json.loads(response.content)["error"]["code"] == "bad_request"


@pytest.mark.django_db
def test_too_many_query_fields_on_an_api_endpoint_is_a_json_400(client_for: Any) -> None:
    # given a host key
    client = client_for(host=HostFactory())

    # when a query string carries more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS (1,000)
    query = "&".join(f"f{i}=1" for i in range(1_001))
    response = client.get(f"/api/v1/usage?{query}")

    # then a JSON 400, not Django's HTML page
    assert_error_shape(response, 400, "bad_request")
