import json
from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_the_openapi_schema_is_valid_and_warning_free() -> None:
    # drf-spectacular fails on any warning: an undocumented view or a missing auth scheme
    out = StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)

    schema = out.getvalue()
    assert "/api/v1/usage:" in schema
    assert "/api/v1/events:" in schema
    assert "/api/v1/settlements/{settlement_id}/approve:" in schema
    assert "bearerFormat" in schema


@pytest.mark.django_db
def test_a_settlement_s_flags_are_in_the_schema_with_the_contract_s_keys() -> None:
    out = StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    schemas = json.loads(out.getvalue())["components"]["schemas"]

    flags = schemas["SettlementOutput"]["properties"]["flags"]
    assert flags == {"type": "array", "items": {"$ref": "#/components/schemas/FlagOutput"}}
    flag = schemas["FlagOutput"]
    assert list(flag["properties"]) == [
        "kind", "model", "customer_category", "record_count", "message"
    ]
    assert flag["properties"]["record_count"] == {"type": "integer"}
    assert schemas["FlagOutputKindEnum"]["enum"] == ["unlicensed", "attribution"]
