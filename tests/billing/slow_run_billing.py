"""`run_billing` with a pause of TEST_PAIR_PAUSE seconds before each batch, one pair a batch
(BILLING_PAIRS_PER_BATCH=1), for the tests that kill it mid-run (as tests/billing/celery_app.py
slows the Celery pair tasks). Run from the project root:
`python -m tests.billing.slow_run_billing --period 2026-10`."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import django

PAUSE = float(os.environ.get("TEST_PAIR_PAUSE", "0"))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["BILLING_PAIRS_PER_BATCH"] = "1"
    django.setup()
    from django.core.management import call_command

    from billing.management.commands import run_billing

    settle = run_billing.billing_pairs_bill

    def slow(**kwargs: Any) -> Any:
        time.sleep(PAUSE)
        return settle(**kwargs)

    run_billing.billing_pairs_bill = slow  # type: ignore[assignment]
    call_command("run_billing", *sys.argv[1:])


if __name__ == "__main__":
    main()
