"""Failed authentication is throttled per client address (docs/security.md, finding 10): wrong
API keys get 429 after TOLLGATE_AUTH_FAILURE_RATE, and repeated wrong admin passwords lock that
address out of the admin login."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from licensing.auth import AdminLoginFailures, AuthFailureThrottle

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_counters() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def _bad_key(client: APIClient, n: int, address: str = "203.0.113.7") -> Any:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer tg_host_guess{n:04d}")
    return client.get("/api/v1/models", REMOTE_ADDR=address)


def test_wrong_api_keys_from_one_address_are_throttled(
    host: Any, client_for: Callable[..., APIClient]
) -> None:
    # given the configured number of failures allowed per minute from one address
    allowed = AuthFailureThrottle().num_requests
    client = APIClient()

    # when an address tries that many wrong keys, and then more
    answers = [_bad_key(client, n).status_code for n in range(allowed)]
    over = _bad_key(client, allowed)

    # then the first ones are 401, the next a 429 in the JSON error shape with Retry-After
    assert answers == [401] * allowed
    assert over.status_code == 429, over.content
    assert over.json()["error"]["code"] == "throttled"
    assert 0 < int(over["Retry-After"]) <= 60
    # and while throttled, even a valid key from that address is refused (else the 401/200
    # difference would tell a guesser which key is right)
    good = client_for(host=host)
    assert good.get("/api/v1/models", REMOTE_ADDR="203.0.113.7").status_code == 429
    # but another address, and a valid key from it, are not affected
    assert _bad_key(APIClient(), 0, address="198.51.100.1").status_code == 401
    assert good.get("/api/v1/models", REMOTE_ADDR="198.51.100.1").status_code == 200


def test_a_forged_forwarded_for_header_does_not_reset_the_count() -> None:
    # given an address that used its allowance
    client = APIClient()
    for n in range(AuthFailureThrottle().num_requests):
        _bad_key(client, n)

    # when it claims another origin in X-Forwarded-For (no proxy is configured)
    client.credentials(HTTP_AUTHORIZATION="Bearer tg_host_more")
    response = client.get(
        "/api/v1/models", REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.99"
    )

    # then it is still throttled
    assert response.status_code == 429


def test_requests_without_a_key_are_not_counted() -> None:
    # given / when an address calls without any key many times
    client = APIClient()
    answers = {
        client.get("/api/v1/models", REMOTE_ADDR="203.0.113.8").status_code for _ in range(30)
    }

    # then each is a plain 401 (nothing was guessed)
    assert answers == {401}


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("ops", password="right-password-42", is_staff=True)


def _login(address: str, password: str) -> Any:
    browser = Client(REMOTE_ADDR=address)
    response = browser.post(
        "/admin/login/?next=/admin/", {"username": "ops", "password": password}
    )
    return browser, response


def test_repeated_wrong_admin_passwords_lock_the_address_out(staff: User) -> None:
    # given the configured number of failed logins from one address
    allowed = AdminLoginFailures().num_requests
    for _ in range(allowed):
        _, response = _login("203.0.113.9", "wrong")
        assert response.status_code == 200  # the form again, with its error

    # when the right password is then tried from that address
    browser, response = _login("203.0.113.9", "right-password-42")

    # then it is refused, saying why, and no session is opened
    assert response.status_code == 200
    assert b"Too many failed logins" in response.content
    assert "_auth_user_id" not in browser.session
    # while the same user from another address logs in
    other, response = _login("198.51.100.2", "right-password-42")
    assert response.status_code == 302
    assert other.session["_auth_user_id"] == str(staff.pk)


def test_a_successful_login_before_the_limit_is_not_refused(staff: User) -> None:
    # given a few typos, fewer than the limit
    for _ in range(AdminLoginFailures().num_requests - 1):
        _login("203.0.113.10", "typo")

    # when / then the right password still logs in
    _, response = _login("203.0.113.10", "right-password-42")
    assert response.status_code == 302
