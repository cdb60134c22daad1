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
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme != self.keyword or not key:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <key>'.")
        api_key = (
            ApiKey.objects.select_related("host", "licensor")
            .filter(key_hash=hash_key(key), revoked_at__isnull=True)
            .first()
        )
        if api_key is None:
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
