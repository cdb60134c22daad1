"""Tenant isolation, endpoint by endpoint and admin page by admin page: THE place where every new
API endpoint and every new admin page gets its row.

Tenant A is MiniMax (licensor) and Fireworks (its host), with a settlement, usage and a private
agreement. Tenant B's callers try A's objects: Kimi's licensor key and Kimi's admin reviewer,
Moonhost's host key (a host that deals only with Kimi), and an anonymous caller. Each must get
what the contract says (another tenant's object is 404, never 403; the wrong kind of key is 403; no
key is 401) and no response may carry one of A's names, ids or labels.

The tables are checked against the URL resolver and the admin site: an endpoint or an admin page
without a row here fails `test_every_*_has_a_row`. Add the row (and, for a page that shows data,
check what it shows) when you add the endpoint or page. See docs/security.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient
from rest_framework.views import APIView

from billing.demo import licensor_reviewer_permissions
from billing.models import BillingRun, Payout, Settlement
from billing.webhook_models import WebhookEndpoint
from licensing.catalog import catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from licensing.services import api_key_create
from tests.billing.conftest import (
    minimax_catalog,
    post_usage,
    record,
    run_billing,
    second_licensor_catalog,
    settlement_of,
)

pytestmark = pytest.mark.django_db

# Tenant A's names, ids and labels that no caller of tenant B may ever read. (Licensor and model
# names are the public catalog: a host's model list names every licensor.)
A_EVENT_ID = "fw-private-evt-0001"
A_CUSTOMER_REF = "fw-customer-acme"
A_AGREEMENT = "fi-2026-06"  # Fireworks' private agreement with MiniMax (minimax_catalog)
A_WEBHOOK_HOST = "hooks.fireworks-private.example"


@dataclass
class World:
    settlement_a: Settlement
    webhook_a: WebhookEndpoint  # Fireworks' webhook endpoint
    payout_a: Payout
    run_a_only: BillingRun  # a run that billed tenant A alone (2026-09)
    secrets: tuple[str, ...]
    kimi: Licensor
    moonhost: Host


@pytest.fixture
def world(db: None) -> World:
    catalog_import(minimax_catalog())
    catalog_import(second_licensor_catalog())
    catalog_import(
        {
            "hosts": [
                {
                    "slug": "moonhost",
                    "name": "Moonhost",
                    "currency": "USD",
                    "default_customer_category": "commercial",
                }
            ]
        }
    )
    fireworks = Host.objects.get(slug="fireworks")
    moonhost = Host.objects.get(slug="moonhost")
    fw = APIClient()
    fw.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(host=fireworks).key}")
    post_usage(
        fw,
        [
            record(A_EVENT_ID, revenue="1000.00", customer_ref=A_CUSTOMER_REF),
            record("fw-sep-1", revenue="10.00", at="2026-09-10T12:00:00Z"),
        ],
    )
    moon = APIClient()
    moon.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(host=moonhost).key}")
    post_usage(moon, [record("moon-1", revenue="100.00", model="kimi-k2.5")])
    run_billing("2026-09")
    run_billing("2026-10")
    settlement_a = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    webhook_a = WebhookEndpoint.objects.create(
        host=fireworks, url=f"https://{A_WEBHOOK_HOST}/tollgate", events=["settlement.created"]
    )
    payout_a = Payout.objects.create(
        licensor=Licensor.objects.get(slug="minimax"),
        currency="USD",
        day=date(2026, 11, 5),
        rail="manual",
        gross_minor=903600,
        platform_fee_minor=0,
        withholding_minor=0,
        carried_forward_minor=0,
        net_minor=903600,
    )
    return World(
        settlement_a=settlement_a,
        payout_a=payout_a,
        webhook_a=webhook_a,
        run_a_only=BillingRun.objects.get(period="2026-09"),
        secrets=(
            "fireworks",
            "Fireworks",
            A_AGREEMENT,
            A_EVENT_ID,
            A_CUSTOMER_REF,
            str(settlement_a.pk),
            A_WEBHOOK_HOST,
            str(webhook_a.pk),
            webhook_a.secret,
            str(payout_a.pk),
        ),
        kimi=Licensor.objects.get(slug="kimi"),
        moonhost=moonhost,
    )


def assert_no_secret(world: World, body: bytes, where: str, *, asked: str = "") -> None:
    """None of tenant A's secrets in `body`, but for what the caller put in its own request
    (`asked`: the admin's "does not exist" message repeats the id that was asked for)."""
    text = body.decode(errors="replace")
    leaked = [s for s in world.secrets if s in text and s not in asked]
    assert not leaked, f"{where} shows tenant A's {leaked}"


# --- the API ---------------------------------------------------------------------------------

S = "{settlement_a}"  # tenant A's settlement id, filled in per test
W = "{webhook_a}"  # tenant A's webhook endpoint id
P = "{payout_a}"  # tenant A's payout id, likewise


@dataclass(frozen=True)
class Row:
    """One endpoint and method: the path to call (with tenant A's ids), a body for writes, and the
    status each of tenant B's callers must get."""

    path: str
    anonymous: int
    other_host: int
    other_licensor: int
    body: dict[str, Any] | None = None


# (method, route as the resolver spells it) -> row. 401 without a key; 403 for the wrong kind of
# key; 404 for another tenant's object; 200 where the caller reads or writes only its own data
# (the body is then checked for tenant A's names like every other).
API_TABLE: dict[tuple[str, str], Row] = {
    ("GET", "api/v1/models"): Row("/api/v1/models", 401, 200, 403),
    ("GET", "api/v1/usage"): Row("/api/v1/usage", 401, 200, 403),
    # Tenant A's event id is free for another host: no conflict, no hint that A used it.
    ("POST", "api/v1/usage"): Row(
        "/api/v1/usage",
        401,
        200,
        403,
        body={"records": [record(A_EVENT_ID, revenue="1.00", model="kimi-k2.5")]},
    ),
    ("GET", "api/v1/usage/summary"): Row("/api/v1/usage/summary?period=2026-10", 401, 200, 403),
    # The same through CloudEvents: tenant A's event id is free for another host too.
    ("POST", "api/v1/events"): Row(
        "/api/v1/events",
        401,
        202,
        403,
        body={
            "specversion": "1.0",
            "id": A_EVENT_ID,
            "source": "probe",
            "type": "tollgate.usage",
            "time": "2026-10-10T12:00:00Z",
            "data": {"model": "kimi-k2.5", "prompt_tokens": 1, "cost": "1.00"},
        },
    ),
    ("GET", "api/v1/usage/rejections"): Row("/api/v1/usage/rejections", 401, 200, 403),
    # Another host asking about tenant A's model sees the public terms, never A's agreement.
    ("GET", "api/v1/entitlements"): Row(
        "/api/v1/entitlements?model=minimax-m2.7&customer_category=commercial", 401, 200, 403
    ),
    ("GET", "api/v1/settlements"): Row("/api/v1/settlements?host=fireworks", 401, 200, 200),
    ("GET", "api/v1/settlements/<str:settlement_id>"): Row(
        f"/api/v1/settlements/{S}", 401, 404, 404
    ),
    ("POST", "api/v1/settlements/<str:settlement_id>/approve"): Row(
        f"/api/v1/settlements/{S}/approve", 401, 403, 404
    ),
    ("POST", "api/v1/settlements/<str:settlement_id>/dispute"): Row(
        f"/api/v1/settlements/{S}/dispute", 401, 403, 404, body={"reason": "probe"}
    ),
    # Respond is the host's: another licensor's key is the wrong kind (403), another host's 404.
    ("POST", "api/v1/settlements/<str:settlement_id>/respond"): Row(
        f"/api/v1/settlements/{S}/respond", 401, 404, 403, body={"message": "probe"}
    ),
    ("GET", "api/v1/settlements/<str:settlement_id>/history"): Row(
        f"/api/v1/settlements/{S}/history", 401, 404, 404
    ),
    ("GET", "api/v1/settlements/<str:settlement_id>/statement.csv"): Row(
        f"/api/v1/settlements/{S}/statement.csv", 401, 403, 404
    ),
    ("GET", "api/v1/settlements/<str:settlement_id>/kit"): Row(
        f"/api/v1/settlements/{S}/kit", 401, 404, 404
    ),
    # An endpoint of the caller's own; the list shows only the caller's.
    ("POST", "api/v1/webhook-endpoints"): Row(
        "/api/v1/webhook-endpoints",
        401,
        201,
        201,
        body={"url": "https://1.1.1.1/hooks", "events": ["settlement.created"]},
    ),
    ("GET", "api/v1/webhook-endpoints"): Row("/api/v1/webhook-endpoints", 401, 200, 200),
    ("DELETE", "api/v1/webhook-endpoints/<str:endpoint_id>"): Row(
        f"/api/v1/webhook-endpoints/{W}", 401, 404, 404
    ),
    ("GET", "api/v1/webhook-endpoints/<str:endpoint_id>/deliveries"): Row(
        f"/api/v1/webhook-endpoints/{W}/deliveries", 401, 404, 404
    ),
    # Payouts are the licensor's: a host key is 403, another licensor's payout 404.
    ("GET", "api/v1/payouts"): Row("/api/v1/payouts", 401, 403, 200),
    ("GET", "api/v1/payouts/<str:payout_id>"): Row(f"/api/v1/payouts/{P}", 401, 403, 404),
    ("GET", "api/v1/payouts/<str:payout_id>/statement.csv"): Row(
        f"/api/v1/payouts/{P}/statement.csv", 401, 403, 404
    ),
}


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.callback


def api_endpoints() -> set[tuple[str, str]]:
    """Every (method, route) of the REST API, from the URL resolver."""
    found = set()
    for route, callback in _walk(get_resolver().url_patterns):
        view = getattr(callback, "view_class", None)
        if not route.startswith("api/v1/") or view is None or not issubclass(view, APIView):
            continue
        for method in view.http_method_names:
            if method not in ("options", "head") and hasattr(view, method):
                found.add((method.upper(), route))
    return found


def schema_operations() -> set[tuple[str, str]]:
    """Every (method, route) of the OpenAPI schema, spelt as the resolver spells routes."""
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    return {
        (method.upper(), re.sub(r"\{(\w+)\}", r"<str:\1>", path.lstrip("/")))
        for path, operations in paths.items()
        for method in operations
    }


def test_every_api_endpoint_has_a_row() -> None:
    assert api_endpoints() == set(API_TABLE), (
        "an API endpoint without a row in API_TABLE (or a row without an endpoint): add it"
    )
    assert schema_operations() == set(API_TABLE), "the OpenAPI schema and API_TABLE differ"


# Every other route outside the admin: what an anonymous caller gets, and that it names no
# tenant. (method, status)
OTHER_TABLE: dict[str, tuple[str, int]] = {
    "healthz": ("GET", 200),
    "metrics": ("GET", 200),
    "webhooks/stripe": ("POST", 400),  # no Stripe-Signature
    "api/schema/": ("GET", 200),
    "api/docs/": ("GET", 200),
}


def test_every_other_route_has_a_row() -> None:
    routes = {
        route
        for route, _ in _walk(get_resolver().url_patterns)
        if not route.startswith(("admin/", "api/v1/"))
    }
    assert routes == set(OTHER_TABLE), "a route without a row in OTHER_TABLE: add it"


@pytest.mark.parametrize("route", sorted(OTHER_TABLE))
def test_the_other_routes_name_no_tenant(world: World, settings: Any, route: str) -> None:
    # given
    settings.STRIPE_WEBHOOK_SECRET = "whsec_tenancy"
    method, expected = OTHER_TABLE[route]

    # when
    client = Client()
    response = client.post(f"/{route}") if method == "POST" else client.get(f"/{route}")

    # then
    assert response.status_code == expected, (route, response.content[:300])
    assert_no_secret(world, response.content, route)


def _callers(world: World) -> dict[str, APIClient]:
    other_host = APIClient()
    other_host.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(host=world.moonhost).key}")
    other_licensor = APIClient()
    other_licensor.credentials(
        HTTP_AUTHORIZATION=f"Bearer {api_key_create(licensor=world.kimi).key}"
    )
    return {"anonymous": APIClient(), "other_host": other_host, "other_licensor": other_licensor}


@pytest.mark.parametrize(("method", "route"), sorted(API_TABLE))
def test_another_tenant_gets_the_contracts_answer_and_none_of_its_names(
    world: World, method: str, route: str
) -> None:
    # given
    row = API_TABLE[(method, route)]
    path = (
        row.path.replace(S, str(world.settlement_a.pk))
        .replace(W, str(world.webhook_a.pk))
        .replace(P, str(world.payout_a.pk))
    )

    for caller, client in _callers(world).items():
        # when
        if method == "GET":
            response = client.get(path)
        elif method == "DELETE":
            response = client.delete(path)
        else:
            response = client.post(path, row.body or {}, format="json")

        # then
        expected = getattr(row, caller)
        assert response.status_code == expected, (caller, method, path, response.content[:300])
        assert_no_secret(world, response.content, f"{method} {path} as {caller}")
        if response.status_code >= 400:
            assert set(json.loads(response.content)["error"]) >= {"code", "message"}

    # and nothing of tenant A changed
    world.settlement_a.refresh_from_db()
    assert world.settlement_a.status == "draft"
    assert WebhookEndpoint.objects.filter(pk=world.webhook_a.pk).exists()


def test_another_host_may_reuse_tenant_as_event_id_without_a_conflict(world: World) -> None:
    response = _callers(world)["other_host"].post(
        "/api/v1/usage", API_TABLE[("POST", "api/v1/usage")].body, format="json"
    )
    assert response.json()["accepted"] == 1, response.content


# --- the admin -------------------------------------------------------------------------------

# Pages of the models a licensor's reviewer may view (billing.demo.licensor_reviewer_permissions),
# and the site's own pages: url name -> (HTTP method, status for Kimi's reviewer on tenant A's
# object). 302 on an object page is the admin's "does not exist" redirect to its index. Pages of
# every other model need no row: the reviewer has no permission there and must get 403.
ADMIN_TABLE: dict[str, tuple[str, int]] = {
    "index": ("GET", 200),
    "login": ("GET", 302),  # already logged in: on to the index
    "logout": ("GET", 405),  # POST only
    "password_change": ("GET", 200),
    "password_change_done": ("GET", 200),
    "jsi18n": ("GET", 200),
    "autocomplete": ("GET", 403),  # settlement -> host: the reviewer may not view hosts
    "view_on_site": ("GET", 404),  # settlements have no public page
    "app_list": ("GET", 200),  # /admin/billing/
    "billing_settlement_changelist": ("GET", 200),
    "billing_settlement_add": ("GET", 403),
    "billing_settlement_change": ("GET", 302),
    "billing_settlement_history": ("GET", 302),
    "billing_settlement_delete": ("GET", 403),
    "billing_settlement_approve": ("POST", 404),
    "billing_settlement_dispute": ("GET", 404),
    "billing_settlement_statement_csv": ("GET", 404),
    "billing_settlement_kit": ("GET", 404),
    "billing_settlement_line_usage": ("GET", 404),
    "billing_billingrun_changelist": ("GET", 200),
    "billing_billingrun_add": ("GET", 403),
    "billing_billingrun_change": ("GET", 302),
    "billing_billingrun_history": ("GET", 302),
    "billing_billingrun_delete": ("GET", 403),
    "billing_payout_changelist": ("GET", 200),
    "billing_payout_add": ("GET", 403),
    "billing_payout_change": ("GET", 302),
    "billing_payout_history": ("GET", 302),
    "billing_payout_delete": ("GET", 403),
    "billing_payout_record": ("GET", 403),  # operators only, whoever's payout it is
    "billing_payout_statement_csv": ("GET", 404),
    "tollgate_payouts": ("GET", 200),  # the workspace's payouts page: Kimi's own, none of A's
}


@pytest.fixture
def other_reviewer(world: World) -> Client:
    user = User.objects.create_user("kimi-reviewer", password="pw", is_staff=True)
    LicensorMembership.objects.create(user=user, licensor=world.kimi)
    user.user_permissions.add(*licensor_reviewer_permissions())
    client = Client()
    client.force_login(user)
    return client


def _reviewer_models() -> set[type]:
    """Models whose admin a reviewer has some permission on."""
    codenames = {p.codename for p in licensor_reviewer_permissions()}
    return {
        model
        for model in admin.site._registry
        if any(
            f"{action}_{model._meta.model_name}" in codenames
            for action in ("view", "change", "add", "delete")
        )
    }


def _model_of(name: str) -> type | None:
    for model in admin.site._registry:
        if name.startswith(f"{model._meta.app_label}_{model._meta.model_name}_"):
            return model
    return None


def admin_pages() -> list[tuple[str, URLPattern]]:
    """Every named admin page: the site's and each registered model admin's."""
    pages = []
    resolver = next(
        p
        for p in get_resolver().url_patterns
        if isinstance(p, URLResolver) and p.namespace == "admin"
    )
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):  # a model admin's urls
            pages += [(p.name, p) for p in pattern.url_patterns if p.name]
        elif pattern.name:
            pages.append((pattern.name, pattern))
    return pages


def test_every_admin_page_a_reviewer_can_see_has_a_row() -> None:
    visible = _reviewer_models()
    missing = [
        name
        for name, _ in admin_pages()
        if name not in ADMIN_TABLE and (_model_of(name) is None or _model_of(name) in visible)
    ]
    assert missing == [], "admin pages a reviewer may reach without a row in ADMIN_TABLE"


def _object_of(world: World, model: type | None) -> Any:
    if model is Settlement:
        return world.settlement_a
    if model is BillingRun:
        return world.run_a_only
    if model is Payout:
        return world.payout_a
    return model._default_manager.order_by("pk").first() if model is not None else None


def _url(world: World, name: str, pattern: URLPattern) -> str:
    if name == "app_list":
        return reverse("admin:app_list", kwargs={"app_label": "billing"})
    if name == "autocomplete":
        return (
            reverse("admin:autocomplete")
            + "?app_label=billing&model_name=settlement&field_name=host&term="
        )
    if name == "view_on_site":
        ct = ContentType.objects.get_for_model(Settlement)
        return reverse("admin:view_on_site", args=[ct.pk, world.settlement_a.pk])
    if name == "billing_settlement_line_usage":  # tenant A's settlement and one of its lines
        line = world.settlement_a.lines.order_by("pk").first()
        assert line is not None
        return reverse(f"admin:{name}", args=[world.settlement_a.pk, line.pk])
    kwargs = {}
    for key in pattern.pattern.converters:
        obj = _object_of(world, _model_of(name))
        kwargs[key] = obj.pk if obj is not None else 0
    return reverse(f"admin:{name}", kwargs=kwargs)


def test_another_licensors_reviewer_sees_nothing_of_tenant_a_in_the_admin(
    world: World, other_reviewer: Client
) -> None:
    visible = _reviewer_models()
    for name, pattern in admin_pages():
        # given
        url = _url(world, name, pattern)
        model = _model_of(name)
        method, expected = ADMIN_TABLE.get(name, ("GET", 403))
        if name not in ADMIN_TABLE:
            assert model not in visible, name

        # when
        response = other_reviewer.post(url) if method == "POST" else other_reviewer.get(url)

        # then
        if (
            name not in ADMIN_TABLE
            and _object_of(world, model) is None
            and "<" in str(pattern.pattern)
        ):
            assert response.status_code in (302, 403), (name, url)  # no object to probe
        else:
            assert response.status_code == expected, (name, url, response.status_code)
        assert_no_secret(world, response.content, f"admin {url}")
        if response.status_code == 302:  # the page it leads to, with the admin's message
            landing = other_reviewer.get(response["Location"])
            assert_no_secret(world, landing.content, f"admin {url} -> {landing}", asked=url)
        if response.status_code == 200 and name.endswith("_changelist"):
            facets = other_reviewer.get(url + "?_facets=1")
            assert facets.status_code == 200
            assert_no_secret(world, facets.content, f"admin {url}?_facets=1")
    world.settlement_a.refresh_from_db()
    assert world.settlement_a.status == "draft"


def test_the_autocomplete_answers_a_reviewer_with_their_own_settlements_only(
    world: World, other_reviewer: Client
) -> None:
    # when: any foreign key to settlements asks for choices (the endpoint takes any such field)
    response = other_reviewer.get(
        "/admin/autocomplete/?app_label=billing&model_name=stripeevent&field_name=settlement&term="
    )

    # then: Kimi's settlement of moonhost only
    assert response.status_code == 200
    kimi = settlement_of(licensor="kimi", host="moonhost", period="2026-10")
    assert [r["id"] for r in response.json()["results"]] == [str(kimi.pk)]
    assert_no_secret(world, response.content, "autocomplete")


def test_another_licensors_reviewer_home_page_shows_none_of_tenant_a(
    world: World, other_reviewer: Client
) -> None:
    # when: Kimi's reviewer opens the workspace's home page
    response = other_reviewer.get(reverse("admin:index"))

    # then: Kimi's own settlement of Moonhost, nothing of MiniMax's at Fireworks
    assert response.status_code == 200
    assert b"Moonhost" in response.content
    assert_no_secret(world, response.content, "the workspace home page")
    assert b"minimax" not in response.content.lower()


def test_another_licensors_reviewer_cannot_drill_into_tenant_as_line_through_their_own(
    world: World, other_reviewer: Client
) -> None:
    # given: Kimi's own settlement, and a line of MiniMax's
    own = settlement_of(licensor="kimi", host="moonhost", period="2026-10")
    line = world.settlement_a.lines.order_by("pk").first()
    assert line is not None

    # when
    mixed = other_reviewer.get(
        reverse("admin:billing_settlement_line_usage", args=[own.pk, line.pk])
    )
    csv = other_reviewer.get(
        reverse("admin:billing_settlement_statement_csv", args=[world.settlement_a.pk])
    )
    kit = other_reviewer.get(reverse("admin:billing_settlement_kit", args=[world.settlement_a.pk]))

    # then
    assert (mixed.status_code, csv.status_code, kit.status_code) == (404, 404, 404)
    assert_no_secret(world, mixed.content + csv.content + kit.content, "drill-down, CSV and kit")


def test_the_model_filter_names_none_of_tenant_as_models(
    world: World, other_reviewer: Client
) -> None:
    response = other_reviewer.get("/admin/billing/settlement/?_facets=1")
    assert response.status_code == 200
    assert b"model=kimi-k2.5" in response.content
    assert b"minimax-m2.7" not in response.content
    assert_no_secret(world, response.content, "the settlement list's filters")


def test_an_anonymous_caller_is_sent_to_the_login_page(world: World) -> None:
    anonymous = Client()
    for name, pattern in admin_pages():
        if name in ("login", "logout"):
            continue
        response = anonymous.get(_url(world, name, pattern))
        assert response.status_code == 302, name
        assert response["Location"].startswith("/admin/login/"), name


@pytest.mark.parametrize("action", ["approve_selected", "dispute_selected"])
def test_a_reviewer_cannot_act_on_another_licensors_settlement_through_an_action(
    world: World, other_reviewer: Client, action: str
) -> None:
    # when: the change list's action is posted with tenant A's settlement selected
    response = other_reviewer.post(
        "/admin/billing/settlement/",
        {"action": action, "_selected_action": [str(world.settlement_a.pk)], "reason": "probe"},
    )

    # then: the action ran on none of theirs (the selection is filtered by the scoped queryset)
    assert response.status_code == 302
    assert_no_secret(world, response.content, action)
    world.settlement_a.refresh_from_db()
    assert world.settlement_a.status == "draft"
