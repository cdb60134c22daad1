"""A recorded LiteLLM StandardLoggingPayload (what its generic API logger and custom loggers get,
captured from LiteLLM 1.110.2 with a mock response) sent as a CloudEvent's data and read through
a host's event_mapping: the mapping reaches what LiteLLM's openmeter event leaves out."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from rest_framework.test import APIClient

from licensing.models import Host
from tests.usage.conftest import AT_TEXT
from usage.models import UsageRecord

PAYLOAD = json.loads(
    (Path(__file__).parent / "fixtures" / "litellm_standard_logging_payload.json").read_text()
)
MAPPING = {
    "model": "data.model",
    "input_tokens": "data.prompt_tokens",
    "output_tokens": "data.completion_tokens",
    "cached_input_tokens": "data.metadata.usage_object.prompt_tokens_details.cached_tokens",
    "revenue": "data.response_cost",
    "customer_category": "data.metadata.requester_metadata.tier",
    "region": "data.metadata.requester_metadata.country",
}


def test_a_standard_logging_payload_maps_through_the_hosts_mapping(
    catalog: Any, host: Host, host_client: APIClient
) -> None:
    # given a host whose events carry LiteLLM's StandardLoggingPayload as data
    host.event_mapping = MAPPING
    host.save()
    event = {
        "specversion": "1.0",
        "type": "litellm.standard_logging_payload",
        "source": "litellm-proxy",
        "id": PAYLOAD["id"],
        "time": AT_TEXT,
        "subject": PAYLOAD["model_parameters"]["user"],
        "data": PAYLOAD,
    }

    # when it is posted
    response = host_client.post(
        "/api/v1/events", data=json.dumps(event), content_type="application/cloudevents+json"
    )

    # then the record holds the payload's model, tokens (cached ones included), cost, category
    # and region, read from where LiteLLM put them
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    stored = UsageRecord.objects.get(event_id="chatcmpl-rec-1")
    assert stored.model_id == catalog["model"].pk  # "MiniMaxAI/MiniMax-M2.7" is an alias
    assert (stored.input_tokens, stored.cached_input_tokens, stored.output_tokens) == (
        1000,
        400,
        200,
    )
    assert stored.revenue == Decimal("0.0014")
    assert (stored.customer_category, stored.region, stored.customer_ref) == (
        "research",
        "DE",
        "customer-1",
    )
