"""Writes to the licensing catalog: API keys, version locks. Catalog import: licensing.catalog."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from licensing.auth import HOST_PREFIX, LICENSOR_PREFIX, hash_key
from licensing.models import ApiKey, Host, Licensor


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    key: str  # the plaintext key: shown once, never stored


def api_key_create(
    *, host: Host | None = None, licensor: Licensor | None = None, name: str = ""
) -> IssuedKey:
    """Issue a key for a host or a licensor: 32 random bytes, stored as a prefix and a hash."""
    kind_prefix = HOST_PREFIX if host is not None else LICENSOR_PREFIX
    return api_key_store(
        key=kind_prefix + secrets.token_urlsafe(32), host=host, licensor=licensor, name=name
    )


def api_key_store(
    *, key: str, host: Host | None = None, licensor: Licensor | None = None, name: str = ""
) -> IssuedKey:
    """Store a key made elsewhere (the demo's fixed keys); idempotent by the key's hash."""
    if (host is None) == (licensor is None):
        raise ValueError("an API key belongs to exactly one host or one licensor")
    kind_prefix = HOST_PREFIX if host is not None else LICENSOR_PREFIX
    if not key.startswith(kind_prefix):
        raise ValueError(f"a {'host' if host else 'licensor'} key starts with {kind_prefix}")
    existing = ApiKey.objects.filter(key_hash=hash_key(key)).first()
    if existing is not None:
        return IssuedKey(api_key=existing, key=key)
    api_key = ApiKey.objects.create(
        prefix=key[: len(kind_prefix) + 6],
        key_hash=hash_key(key),
        host=host,
        licensor=licensor,
        name=name,
    )
    return IssuedKey(api_key=api_key, key=key)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    with transaction.atomic():
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    api_key.refresh_from_db()
    return api_key
