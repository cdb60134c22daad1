#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if sys.argv[1:2] == ["verify_kit"]:
        # verify_kit needs no database (docs/verification.md): without DATABASE_URL the
        # settings would start the embedded PostgreSQL; this address is never connected to.
        os.environ.setdefault("DATABASE_URL", "postgres://unused@127.0.0.1:9/unused")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
