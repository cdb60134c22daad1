"""Fixtures of usage tests: a small catalog (a licensed model with an alias, a fine-tune of it,
a EUR-licensed model) and helpers to post batches."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from rest_framework.test import APIClient

from licensing.models import Host, LicensedModel
from tests.factories import (
    LicensedModelFactory,
    LicenseFactory,
    LicenseVersionFactory,
    LicensorFactory,
    ModelAliasFactory,
)

# Usage of the past month: inside the partitions the migration creates, and never in the future.
NOW = datetime.now(UTC)
AT = (NOW - timedelta(days=1)).replace(microsecond=0)
AT_TEXT = AT.isoformat().replace("+00:00", "Z")


@pytest.fixture
def catalog(db: None, licensor: Any) -> dict[str, LicensedModel]:
    license = LicenseFactory(slug="minimax-m27", licensor=licensor)
    LicenseVersionFactory(license=license, label="v1", currency="USD")
    model = LicensedModelFactory(slug="minimax-m2.7", license=license, licensor=licensor)
    ModelAliasFactory(model=model, alias="MiniMaxAI/MiniMax-M2.7")
    finetune_licensor = LicensorFactory(slug="tuner")
    finetune = LicensedModelFactory(
        slug="m27-tuned", license=None, parent=model, licensor=finetune_licensor
    )
    eur_license = LicenseFactory(slug="eurolicense")
    LicenseVersionFactory(license=eur_license, label="e1", currency="EUR")
    eur_model = LicensedModelFactory(slug="euromodel", license=eur_license)
    return {"model": model, "finetune": finetune, "eur": eur_model}


def record(event_id: str = "evt-1", **fields: Any) -> dict[str, Any]:
    """A valid record; keyword arguments override or (with None) remove fields."""
    base: dict[str, Any] = {
        "event_id": event_id,
        "model": "minimax-m2.7",
        "occurred_at": AT_TEXT,
        "customer_category": "commercial",
        "input_tokens": 1000,
        "output_tokens": 200,
        "revenue": "1.50",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def post(host_client: APIClient) -> Callable[..., Any]:
    """POST records as JSON (or ndjson / gzip) with the host's key; returns the response."""

    def send(
        records: list[Any],
        *,
        client: APIClient | None = None,
        ndjson: bool = False,
        gzipped: bool = False,
    ) -> Any:
        if ndjson:
            body = b"\n".join(orjson.dumps(r) for r in records) + b"\n"
            content_type = "application/x-ndjson"
        else:
            # json, not orjson: it writes integers beyond 64 bits, which the rules must refuse.
            body = json.dumps({"records": records}).encode()
            content_type = "application/json"
        extra = {}
        if gzipped:
            body = gzip.compress(body)
            extra["HTTP_CONTENT_ENCODING"] = "gzip"
        return (client or host_client).post(
            "/api/v1/usage", data=body, content_type=content_type, **extra
        )

    return send


@pytest.fixture
def other_host(db: None) -> Host:
    from tests.factories import HostFactory

    return HostFactory(slug="together", currency="USD")
