"""`python manage.py create_api_key --host SLUG | --licensor SLUG`: print a new key once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from licensing.models import Host, Licensor
from licensing.services import api_key_create


class Command(BaseCommand):
    help = (
        "Issue an API key for a host or a licensor; the key is printed once, only its hash is kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        owner = parser.add_mutually_exclusive_group(required=True)
        owner.add_argument("--host", metavar="SLUG")
        owner.add_argument("--licensor", metavar="SLUG")
        parser.add_argument("--name", default="", help="a label shown in the admin")

    def handle(self, *args: Any, **options: Any) -> None:
        host = licensor = None
        if options["host"]:
            host = Host.objects.filter(slug=options["host"]).first()
            if host is None:
                raise CommandError(f"--host: unknown host {options['host']!r}")
        else:
            licensor = Licensor.objects.filter(slug=options["licensor"]).first()
            if licensor is None:
                raise CommandError(f"--licensor: unknown licensor {options['licensor']!r}")
        issued = api_key_create(host=host, licensor=licensor, name=options["name"])
        self.stdout.write(issued.key)
