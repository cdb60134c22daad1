"""The demo world of `make demo` (`manage.py seed_demo`), modelled on shared licenses.md:
MiniMax M2.7 (free for personal, research and non-profit use; commercial hosting under per-host
agreements), Kimi K2.5, DeepSeek V3, a Falcon-style yearly threshold license, and three hosts in
two currencies. Idempotent: running it again changes nothing.

The demo's API keys are derived from a fixed seed so that every run prints the same keys; they
are demo keys, not secrets. Real keys come from `create_api_key` (32 random bytes).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth.models import Permission, User
from django.db import transaction

from licensing.auth import HOST_PREFIX, LICENSOR_PREFIX
from licensing.catalog import ImportReport, catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from licensing.services import api_key_store

CATALOG = Path(__file__).resolve().parent.parent / "licensing" / "fixtures" / "demo_catalog.json"
DEMO_PASSWORD = "tollgate-demo"  # noqa: S105 - demo logins only, printed by seed_demo


@dataclass
class DemoWorld:
    report: ImportReport
    host_keys: dict[str, str] = field(default_factory=dict)
    licensor_keys: dict[str, str] = field(default_factory=dict)
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # (user, password, role)


def demo_key(prefix: str, slug: str) -> str:
    digest = hashlib.sha256(f"tollgate-demo:{prefix}:{slug}".encode()).digest()  # 32 bytes
    return prefix + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def demo_seed() -> DemoWorld:
    with transaction.atomic():
        report = catalog_import(json.loads(CATALOG.read_text()))
        world = DemoWorld(report=report)
        for host in Host.objects.order_by("slug"):
            key = demo_key(HOST_PREFIX, host.slug)
            api_key_store(key=key, host=host, name="demo")
            world.host_keys[host.slug] = key
        for licensor in Licensor.objects.order_by("slug"):
            key = demo_key(LICENSOR_PREFIX, licensor.slug)
            api_key_store(key=key, licensor=licensor, name="demo")
            world.licensor_keys[licensor.slug] = key

        admin, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(DEMO_PASSWORD)
            admin.save()
        world.logins.append(("admin", DEMO_PASSWORD, "operator (superuser)"))

        minimax = Licensor.objects.get(slug="minimax")
        reviewer, created = User.objects.get_or_create(
            username="minimax", defaults={"is_staff": True, "email": minimax.email}
        )
        if created:
            reviewer.set_password(DEMO_PASSWORD)
            reviewer.save()
        LicensorMembership.objects.get_or_create(user=reviewer, defaults={"licensor": minimax})
        reviewer.user_permissions.add(*licensor_reviewer_permissions())
        world.logins.append(("minimax", DEMO_PASSWORD, "MiniMax's settlement reviewer"))
    return world


def licensor_reviewer_permissions() -> list[Permission]:
    """What a licensor's reviewer may do in the admin: view (and act on) settlements."""
    return list(
        Permission.objects.filter(
            content_type__app_label="billing",
            codename__in=[
                "view_settlement",
                "change_settlement",
                "view_settlementline",
                "view_billingrun",
            ],
        )
    )
