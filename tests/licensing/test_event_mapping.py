"""A host's default_customer_category and event_mapping: in the catalog (path-named errors, all
or nothing, absent keeps, null clears) and in the admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from licensing.catalog import CatalogError, catalog_import
from licensing.event_mapping import event_mapping_effective
from licensing.models import Host
from tests.factories import HostFactory

pytestmark = pytest.mark.django_db


def host_entry(**fields: Any) -> dict[str, Any]:
    return {"slug": "fireworks", "name": "Fireworks AI", "currency": "USD", **fields}


def test_it_stores_the_mapping_and_the_default_category() -> None:
    # when a host with both keys is imported
    catalog_import(
        {
            "hosts": [
                host_entry(
                    default_customer_category="commercial",
                    event_mapping={"revenue": "data.net_revenue", "region": "data.geo.country"},
                )
            ]
        }
    )

    # then both are stored as given
    host = Host.objects.get(slug="fireworks")
    assert host.default_customer_category == "commercial"
    assert host.event_mapping == {"revenue": "data.net_revenue", "region": "data.geo.country"}


def test_it_names_the_path_of_every_bad_node() -> None:
    # given a host with a bad category, a key that is no record field and paths outside data
    bad = host_entry(
        default_customer_category="enterprise",
        event_mapping={
            "revenue": "cost",
            "event_id": "data.id",
            "model": "data..model",
            "region": 7,
            "input_tokens": "data." + ".".join(["a"] * 9),
        },
    )

    # when it is imported
    with pytest.raises(CatalogError) as caught:
        catalog_import({"hosts": [bad]})

    # then every problem is named by its path, and nothing is written
    errors = caught.value.errors
    assert errors == [
        "hosts[0].default_customer_category: must be one of individual, commercial, research,"
        " nonprofit or null",
        "hosts[0].event_mapping.revenue: must be a path data.<name>[.<name>...] into the event,"
        " at most 8 names, e.g. data.prompt_tokens",
        "hosts[0].event_mapping.event_id: not a record field a mapping can fill (one of model,"
        " input_tokens, cached_input_tokens, output_tokens, requests, revenue, currency, region,"
        " customer_category)",
        "hosts[0].event_mapping.model: must be a path data.<name>[.<name>...] into the event,"
        " at most 8 names, e.g. data.prompt_tokens",
        "hosts[0].event_mapping.region: must be a path data.<name>[.<name>...] into the event,"
        " at most 8 names, e.g. data.prompt_tokens",
        "hosts[0].event_mapping.input_tokens: must be a path data.<name>[.<name>...] into the"
        " event, at most 8 names, e.g. data.prompt_tokens",
    ]
    assert not Host.objects.exists()


def test_a_mapping_must_be_an_object() -> None:
    with pytest.raises(CatalogError) as caught:
        catalog_import({"hosts": [host_entry(event_mapping=["data.cost"])]})
    assert caught.value.errors == [
        "hosts[0].event_mapping: must be an object of record field -> path"
    ]


def test_an_absent_key_keeps_the_stored_value_and_null_clears_it() -> None:
    # given a host with a mapping
    catalog_import(
        {
            "hosts": [
                host_entry(
                    default_customer_category="research", event_mapping={"revenue": "data.x"}
                )
            ]
        }
    )

    # when the host is imported again without the keys
    report = catalog_import({"hosts": [host_entry()]})

    # then nothing changed
    host = Host.objects.get()
    assert (host.default_customer_category, host.event_mapping) == (
        "research",
        {"revenue": "data.x"},
    )
    assert report.unchanged["hosts"] == 1

    # when it is imported with nulls, both are cleared
    catalog_import({"hosts": [host_entry(default_customer_category=None, event_mapping=None)]})
    host.refresh_from_db()
    assert (host.default_customer_category, host.event_mapping) == ("", {})


def test_the_host_mapping_is_merged_over_the_defaults_key_by_key() -> None:
    assert event_mapping_effective({"revenue": "data.net", "region": "data.geo.cc"}) == {
        "model": ("model",),
        "input_tokens": ("prompt_tokens",),
        "output_tokens": ("completion_tokens",),
        "cached_input_tokens": ("cached_tokens",),
        "revenue": ("net",),
        "region": ("geo", "cc"),
    }


@pytest.fixture
def operator() -> Client:
    User.objects.create_superuser("op", "op@example.com", "pw-for-tests")
    client = Client()
    client.login(username="op", password="pw-for-tests")
    return client


def host_form(host: Host, **overrides: str) -> dict[str, str]:
    data = {
        "slug": host.slug,
        "name": host.name,
        "currency": host.currency,
        "email": "",
        "stripe_customer_id": "",
        "default_customer_category": "commercial",
        "event_mapping": '{"revenue": "data.net"}',
    }
    data.update(overrides)
    return data


def test_the_admin_refuses_a_bad_mapping_naming_the_key(operator: Client) -> None:
    # given a host
    host = HostFactory(slug="fireworks")

    # when an operator saves a mapping with a path outside data
    response = operator.post(
        f"/admin/licensing/host/{host.pk}/change/",
        host_form(host, event_mapping='{"revenue": "cost"}'),
    )

    # then the form comes back naming the key, and nothing changed
    assert response.status_code == 200
    assert "event_mapping.revenue: must be a path data.&lt;name&gt;" in response.content.decode()
    host.refresh_from_db()
    assert (host.default_customer_category, host.event_mapping) == ("", {})


def test_the_admin_saves_a_good_mapping(operator: Client) -> None:
    host = HostFactory(slug="fireworks")

    response = operator.post(f"/admin/licensing/host/{host.pk}/change/", host_form(host))

    assert response.status_code == 302
    host.refresh_from_db()
    assert (host.default_customer_category, host.event_mapping) == (
        "commercial",
        {"revenue": "data.net"},
    )
