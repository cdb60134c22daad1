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
