"""`python manage.py import_catalog FILE.json`: upsert the catalog (docs/catalog.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from licensing.catalog import CatalogError, catalog_import


class Command(BaseCommand):
    help = "Upsert licensors, hosts, licenses, models and agreements from a catalog file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="catalog JSON file (docs/catalog.md)")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandError(f"{path}: not valid JSON: {exc}") from None
        try:
            report = catalog_import(data)
        except CatalogError as exc:
            for error in exc.errors:
                self.stderr.write(error)
            raise CommandError(
                f"{path}: {len(exc.errors)} error(s); nothing was imported"
            ) from None
        for line in report.lines():
            self.stdout.write(line)
