"""API keys: only a hash is stored; 401 / 403 with the JSON error shape of docs/api.md."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from rest_framework.test import APIClient

from licensing.auth import hash_key
from licensing.models import ApiKey
from licensing.services import api_key_create, api_key_revoke
from tests.factories import LicensedModelFactory

pytestmark = pytest.mark.django_db


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "fields"}
    return body["error"]


def test_it_prints_a_host_key_once_and_stores_only_its_hash(host) -> None:
    # when a key is created from the command line
    out = StringIO()
    call_command("create_api_key", "--host", host.slug, stdout=out)
    key = out.getvalue().strip()

    # then it is a host key of at least 32 random bytes and the table holds only a hash
    assert key.startswith("tg_host_")
    assert len(key) >= len("tg_host_") + 43  # 32 bytes of url-safe base64
    stored = ApiKey.objects.get()
    assert stored.key_hash == hash_key(key)
    assert key.startswith(stored.prefix) and len(stored.prefix) < 20


def test_a_dump_of_the_key_table_holds_no_plaintext_key(host, licensor) -> None:
    # given keys of both kinds
    keys = [api_key_create(host=host).key, api_key_create(licensor=licensor).key]

    # when the whole table is dumped as text
    with connection.cursor() as cursor:
        cursor.execute("SELECT t::text FROM licensing_apikey t")
        dump = "\n".join(row[0] for row in cursor.fetchall())

    # then no key, nor its random part, appears in it
    for key in keys:
        secret = key.split("_", 2)[2]
        assert key not in dump
        assert secret not in dump
        assert secret[8:] not in dump


def test_it_issues_licensor_keys_and_refuses_unknown_owners(licensor) -> None:
    out = StringIO()
    call_command("create_api_key", "--licensor", licensor.slug, stdout=out)
    assert out.getvalue().startswith("tg_lic_")
    with pytest.raises(CommandError, match="--host: unknown host 'nope'"):
        call_command("create_api_key", "--host", "nope")


def test_a_missing_key_is_401_with_the_json_error(api_client: APIClient) -> None:
    response = api_client.get("/api/v1/models")

    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthenticated"
    assert response["WWW-Authenticate"] == "Bearer"


def test_an_unknown_key_is_401(api_client: APIClient) -> None:
    api_client.credentials(HTTP_AUTHORIZATION="Bearer tg_host_" + "x" * 43)

    response = api_client.get("/api/v1/models")

    assert response.status_code == 401
    assert error_of(response)["message"] == "Unknown or revoked API key."


def test_a_malformed_header_is_401(api_client: APIClient) -> None:
    api_client.credentials(HTTP_AUTHORIZATION="Token abc")

    response = api_client.get("/api/v1/models")

    assert response.status_code == 401
    assert "Bearer" in error_of(response)["message"]


def test_a_revoked_key_is_401(host) -> None:
    # given a key that was revoked
    issued = api_key_create(host=host)
    api_key_revoke(api_key=issued.api_key)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")

    # when it is used, then it is refused
    assert client.get("/api/v1/models").status_code == 401


def test_the_wrong_kind_of_key_is_403(licensor_client: APIClient) -> None:
    # a licensor key on a host endpoint
    response = licensor_client.get("/api/v1/models")

    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "forbidden"
    assert "host API key" in error["message"]


def test_a_host_sees_models_with_the_terms_in_force_for_it(host, host_client) -> None:
    # given a model under a license with a public version
    from tests.factories import AgreementFactory, LicenseVersionFactory

    model = LicensedModelFactory(slug="minimax-m2.7")
    LicenseVersionFactory(license=model.license, label="public")
    AgreementFactory(host=host, license=model.license, label="fw-deal")

    # when the host lists models
    response = host_client.get("/api/v1/models")

    # then its agreement is the terms in force
    assert response.status_code == 200
    [row] = response.json()["results"]
    assert row["slug"] == "minimax-m2.7"
    assert row["terms"]["kind"] == "agreement"
    assert row["terms"]["label"] == "fw-deal"
