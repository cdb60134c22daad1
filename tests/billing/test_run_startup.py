"""What `run_billing` costs besides the run itself (docs/performance.md, "Start-up"): the modules
its start-up imports, and the one query of the listing it prints at the end."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from billing.models import Settlement
from billing.selectors import settlements_for_period_listing
from licensing.catalog import catalog_import
from licensing.models import Host
from tests.billing.conftest import minimax_catalog, post_usage, record, run_billing

ROOT = Path(__file__).resolve().parents[2]

# Modules that the web (the API, its schema, the Stripe webhook) or a worker needs and a billing
# run started from a shell does not: each costs tens of milliseconds to import.
NOT_AT_START_UP = (
    "stripe",
    "rest_framework.views",
    "rest_framework.serializers",
    "drf_spectacular.openapi",
    "prometheus_client",
    "billing.api",
    "billing.payouts_api",
    "config.metrics",
)

# As `manage.py run_billing` starts: django.setup() (admin autodiscovery included), the command
# loaded, then its system checks, up to where handle() would begin.
START_UP = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.core.management import load_command_class
command = load_command_class("billing", "run_billing")
command.check(**command.get_check_kwargs({}))
print(json.dumps(sorted(m for m in sys.argv[1:] if m in sys.modules)))
"""


def test_start_up_imports_neither_the_api_nor_stripe_nor_prometheus() -> None:
    # given: a fresh interpreter, as an operator's shell starts the command
    env = {**os.environ, "DEBUG": "true", "PYTHONPATH": str(ROOT)}

    # when: it starts the command as manage.py does, checks included
    done = subprocess.run(
        [sys.executable, "-c", START_UP, *NOT_AT_START_UP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    # then: none of the web's or the workers' heavy modules was imported
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def _line(s: Settlement, line_count: int) -> tuple[object, ...]:
    """What a listing line of run_billing shows of a settlement."""
    return (
        s.licensor.slug,
        s.host.slug,
        s.period,
        s.currency,
        s.status,
        s.total_display,
        line_count,
        s.pk,
    )


def test_the_listing_is_one_query_whatever_the_number_of_settlements(
    db: None, client_for: Callable[..., APIClient]
) -> None:
    # given: a billed month of three hosts, each settlement with its lines
    hosts = ("fireworks", "together", "deepinfra")
    catalog_import(minimax_catalog(hosts=hosts))
    for n, slug in enumerate(hosts):
        post_usage(
            client_for(host=Host.objects.get(slug=slug)),
            [record(f"{slug}-{i}", revenue=f"{100 + n}.50") for i in range(n + 1)],
        )
    out = run_billing("2026-10")

    # when: the listing is read and every field a listing line shows is used
    with CaptureQueriesContext(connection) as queries:
        shown = [
            (
                s.licensor_slug,
                s.host_slug,
                s.period,
                s.currency,
                s.status,
                s.total_display,
                s.line_count,
                s.pk,
            )
            for s in settlements_for_period_listing(period="2026-10")
        ]

    # then: one query for all of it, and the same settlements, totals and line counts as the
    # rows themselves, in the order run_billing printed them
    assert len(queries.captured_queries) == 1, [q["sql"] for q in queries.captured_queries]
    # and only the columns shown: not the JSON and timestamps the rows also hold
    sql = queries.captured_queries[0]["sql"]
    for column in ("flags", "dispute_lines", "computed_at", "event_mapping", "payout_minimum"):
        assert f'."{column}"' not in sql
    expected = [
        _line(s, s.lines.count())
        for s in Settlement.objects.filter(period="2026-10").order_by(
            "licensor__slug", "host__slug", "currency"
        )
    ]
    assert shown == expected
    assert [row[1] for row in shown] == sorted(hosts)
    printed = [line for line in out.splitlines() if " line(s) " in line]
    assert [line.split()[1] for line in printed] == [row[1] for row in shown]
    for line, (_, _, _, _, _, total, lines, pk) in zip(printed, shown, strict=True):
        assert f" {total}  {lines} line(s)  {pk}" in line


@pytest.mark.django_db
def test_the_run_leaves_the_start_up_heap_out_of_the_collector() -> None:
    # given: nothing frozen in this process
    gc.unfreeze()
    try:
        # when
        run_billing("2026-10")

        # then: what Django's start-up allocated is out of the cyclic collector's reach (a run's
        # full collections no longer scan it)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
