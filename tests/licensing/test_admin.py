"""The catalog admin: rules validated on entry, locked terms read-only, keys revocable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from licensing.models import ApiKey, LicenseVersion
from licensing.services import api_key_create
from tests.factories import LicenseFactory, LicenseVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> Client:
    User.objects.create_superuser("op", "op@example.com", "pw-for-tests")
    client = Client()
    client.login(username="op", password="pw-for-tests")
    return client


def version_form(license_id: int, **overrides: str) -> dict[str, str]:
    data = {
        "license": str(license_id),
        "label": "2026-11",
        "effective_from_0": "2026-11-01",
        "effective_from_1": "00:00:00",
        "currency": "USD",
        "rules": '[{"charge": {"type": "free"}}]',
        "minimum_per_month": "",
        "cap_per_month": "",
        "attribution": "",
    }
    data.update(overrides)
    return data


def test_it_refuses_bad_rules_naming_the_node(operator: Client) -> None:
    # given a license
    license = LicenseFactory()

    # when a version with a bad percent is added in the admin
    response = operator.post(
        "/admin/licensing/licenseversion/add/",
        version_form(license.pk, rules='[{"charge": {"type": "revenue_share", "percent": "101"}}]'),
    )

    # then the form is shown again with the path of the bad node, and nothing is stored
    assert response.status_code == 200
    assert "rules[0].charge.percent: must be a decimal from 0 to 100" in response.content.decode()
    assert not LicenseVersion.objects.exists()


def test_it_accepts_good_rules(operator: Client) -> None:
    license = LicenseFactory()

    response = operator.post("/admin/licensing/licenseversion/add/", version_form(license.pk))

    assert response.status_code == 302
    assert LicenseVersion.objects.get().label == "2026-11"


def test_a_locked_version_is_read_only_in_the_admin(operator: Client) -> None:
    # given a locked version
    version = LicenseVersionFactory(label="locked", locked_at=timezone.now())
    original_rules = version.rules

    # when someone posts a change to it
    operator.post(
        f"/admin/licensing/licenseversion/{version.pk}/change/",
        version_form(version.license_id, label="changed", rules="[]"),
    )

    # then nothing changed, and it cannot be deleted
    version.refresh_from_db()
    assert version.label == "locked"
    assert version.rules == original_rules
    assert version.effective_from == datetime(2026, 1, 1, tzinfo=UTC)
    page = operator.get(f"/admin/licensing/licenseversion/{version.pk}/delete/")
    assert page.status_code == 403


def test_the_license_page_shows_its_versions_inline(operator: Client) -> None:
    version = LicenseVersionFactory(label="2026-04-15")

    response = operator.get(f"/admin/licensing/license/{version.license_id}/change/")

    assert response.status_code == 200
    assert "2026-04-15" in response.content.decode()


def test_an_operator_revokes_keys_in_the_admin(operator: Client, host) -> None:
    # given an active key
    issued = api_key_create(host=host)

    # when the revoke action runs on it
    response = operator.post(
        "/admin/licensing/apikey/",
        {"action": "revoke", "_selected_action": [str(issued.api_key.pk)]},
    )

    # then it is revoked and no longer authenticates
    assert response.status_code == 302
    assert ApiKey.objects.get().revoked_at is not None
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")
    assert client.get("/api/v1/models").status_code == 401


def test_the_api_docs_page_is_served(client: Client) -> None:
    assert client.get("/api/docs/").status_code == 200
