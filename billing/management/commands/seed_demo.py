"""`python manage.py seed_demo [--serve]`: the demo world, idempotent (README, "make demo")."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from billing.demo import demo_seed


class Command(BaseCommand):
    help = "Load the demo catalog, API keys and admin logins; with --serve, then serve on :8000."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--serve", action="store_true", help="serve the API and admin after")
        parser.add_argument("--addrport", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        world = demo_seed()
        self.stdout.write(self.style.MIGRATE_HEADING("Catalog"))
        for line in world.report.lines():
            self.stdout.write(f"  {line}")
        self.stdout.write(self.style.MIGRATE_HEADING("API keys (demo keys: the same every run)"))
        for slug, key in world.host_keys.items():
            self.stdout.write(f"  host     {slug:<10} {key}")
        for slug, key in world.licensor_keys.items():
            self.stdout.write(f"  licensor {slug:<10} {key}")
        self.stdout.write(self.style.MIGRATE_HEADING("Admin logins"))
        for user, password, role in world.logins:
            self.stdout.write(f"  {user} / {password}  ({role})")
        if options["serve"]:
            addr = options["addrport"]
            self.stdout.write(
                self.style.SUCCESS(
                    f"Serving on http://{addr}/  (admin: http://{addr}/admin/, "
                    f"API docs: http://{addr}/api/docs/)"
                )
            )
            call_command("runserver", addr, use_reloader=False)
