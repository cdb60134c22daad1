"""API key authentication: `Authorization: Bearer tg_host_...` or `tg_lic_...`.

The key is looked up by its SHA-256; the caller becomes a `Principal` that carries its host or
its licensor, and every query a view makes is filtered by that owner.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from licensing.models import ApiKey, Host, Licensor

HOST_PREFIX = "tg_host_"
LICENSOR_PREFIX = "tg_lic_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: exactly one of host and licensor is set."""

    api_key_id: int
    host: Host | None = None
    licensor: Licensor | None = None

    is_authenticated = True
    is_anonymous = False

    @property
    def pk(self) -> int:
        return self.api_key_id

    @property
    def kind(self) -> str:
        return "host" if self.host is not None else "licensor"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Principal, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        # Credentials were presented: refuse them all while this address is over its failure
        # rate, the right key too (else 401 vs 200 would still tell a guesser which is right).
        failures = AuthFailureThrottle()
        wait = failures.blocked(request)
        if wait is not None:
            raise exceptions.Throttled(
                wait=wait, detail="Too many failed authentications from this address."
            )
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme != self.keyword or not key:
            failures.record(request)
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <key>'.")
        api_key = (
            ApiKey.objects.select_related("host", "licensor")
            .filter(key_hash=hash_key(key), revoked_at__isnull=True)
            .first()
        )
        if api_key is None:
            failures.record(request)
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        # Touch last_used_at at most once a minute: a busy host must not write a row per batch.
        now = timezone.now()
        if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        principal = Principal(api_key_id=api_key.pk, host=api_key.host, licensor=api_key.licensor)
        return principal, api_key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class IsHost(permissions.BasePermission):
    message = "This endpoint needs a host API key (tg_host_...)."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, Principal) and request.user.host is not None


class IsLicensor(permissions.BasePermission):
    message = "This endpoint needs a licensor API key (tg_lic_...)."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, Principal) and request.user.licensor is not None


class IsHostOrLicensor(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, Principal)


class ApiKeyThrottle(throttling.SimpleRateThrottle):
    """Requests per API key (`TOLLGATE_THROTTLE_RATE`, default 600/min); 429 with Retry-After."""

    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.user, Principal):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.api_key_id}


class FailureCounter(throttling.SimpleRateThrottle):
    """Failures per client address over a sliding window (DRF's throttle history in the cache,
    shared between processes when CACHE_URL is set). Unlike a throttle it counts only what
    `record` is told about, and `blocked` says for how long the address is refused.

    The address is DRF's `get_ident`: REMOTE_ADDR, or the client's address in X-Forwarded-For
    behind TOLLGATE_NUM_PROXIES trusted proxies (never a header a client could set alone)."""

    # Set by SimpleRateThrottle.__init__ from the scope's rate (the stubs do not declare them).
    num_requests: int | None
    duration: int

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def _load(self, request: Any) -> None:
        self.key = self.get_cache_key(request, None)
        self.now = self.timer()
        self.history = [t for t in self.cache.get(self.key, []) if t > self.now - self.duration]

    def blocked(self, request: Any) -> float | None:
        """Seconds until the address may try again; None when it may now."""
        self._load(request)
        if self.num_requests is not None and len(self.history) >= self.num_requests:
            return self.wait() or 1.0
        return None

    def record(self, request: Any) -> None:
        self._load(request)
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


class AuthFailureThrottle(FailureCounter):
    """Wrong API keys per client address (`TOLLGATE_AUTH_FAILURE_RATE`, default 20/min): past
    it, every request presenting a key from there is 429 (docs/security.md, finding 10)."""

    scope = "auth_failure"


class AdminLoginFailures(FailureCounter):
    """Failed admin logins per client address (`TOLLGATE_ADMIN_LOGIN_FAILURE_RATE`, default
    10/h): past it, the admin login refuses that address, the right password too."""

    scope = "admin_login_failure"
