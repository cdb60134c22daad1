"""`make demo`'s steps before serving, run as a test: seed, then the demo keys and logins work."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from billing.demo import DEMO_PASSWORD
from licensing.models import Agreement, ApiKey, Host, LicensedModel

pytestmark = pytest.mark.django_db


def keys_in(output: str) -> dict[str, str]:
    keys = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in {"host", "licensor"}:
            keys[f"{parts[0]}:{parts[1]}"] = parts[2]
    return keys


def test_it_seeds_the_demo_world_idempotently() -> None:
    # when the demo is seeded twice
    first, second = StringIO(), StringIO()
    call_command("seed_demo", stdout=first)
    call_command("seed_demo", stdout=second)

    # then the world is there once: three hosts in two currencies, derivatives, agreements
    assert sorted(Host.objects.values_list("currency", flat=True)) == ["EUR", "USD", "USD"]
    fp8 = LicensedModel.objects.get(slug="minimax-m2.7-fp8")
    assert fp8.effective_license().slug == "minimax-m27"
    assert Agreement.objects.filter(license__slug="minimax-m27").count() == 3
    assert "total: 0 created, 0 updated, 25 unchanged" in second.getvalue()
    # and the same keys are printed every run, stored once
    assert keys_in(first.getvalue()) == keys_in(second.getvalue())
    assert ApiKey.objects.count() == len(keys_in(first.getvalue())) == 7


def test_the_printed_keys_and_logins_work() -> None:
    # given a seeded demo
    out = StringIO()
    call_command("seed_demo", stdout=out)
    keys = keys_in(out.getvalue())

    # then the host key lists models, and the admin login reaches the admin
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {keys['host:fireworks']}")
    assert api.get("/api/v1/models").status_code == 200
    browser = Client()
    assert browser.login(username="admin", password=DEMO_PASSWORD)
    assert browser.get("/admin/licensing/license/").status_code == 200
    assert f"admin / {DEMO_PASSWORD}" in out.getvalue()
