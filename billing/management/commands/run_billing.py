"""`python manage.py run_billing [--period YYYY-MM] [--jobs N] [--verify]` (README, "Management
commands").

Runs the monthly billing run synchronously through the same services the Celery tasks call,
prints one line per settlement of the period, and on a terminal shows progress. With --jobs N
the batches of pairs are billed by N processes at once (forked from this one, each with its own
database connection), as N Celery workers would bill them. A pair that cannot be settled is
recorded as failed and the run goes on with the others; at the end each failed pair is named
with its error and the command exits 1. With --verify it re-rates the period's settled
settlements instead and exits 1, naming each one that would differ.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any

from django.core.checks import Tags
from django.core.checks.registry import registry
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.utils import timezone

from billing.models import BillingRunPair
from billing.runs import billing_pairs_bill, billing_run_start, pairs_batches
from billing.selectors import settlements_for_period_listing
from billing.settling import Pair
from billing.verify import settlements_verify
from core.periods import period_bounds, previous_period

# The web stack's system checks: loading the URLconf, the admin's registrations and every template
# tag library imports the API, DRF and drf-spectacular (~250 ms, a third of this command's
# start-up; docs/performance.md, "Start-up"). `manage.py check`, `migrate` and runserver run them.
WEB_CHECKS = frozenset({Tags.urls, Tags.admin, Tags.templates})


class Command(BaseCommand):
    help = "Run the monthly billing run for a period (default: last month), or --verify it."

    def get_check_kwargs(self, options: Any) -> dict[str | None, Any]:
        """Every system check but the web stack's (WEB_CHECKS), before the run as for any
        command; untagged checks (auth's middleware order) are the web stack's too."""
        return {"tags": sorted(registry.tags_available() - WEB_CHECKS)}

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--period", help="YYYY-MM (default: the previous UTC month)")
        parser.add_argument(
            "--verify",
            action="store_true",
            help="re-rate settled settlements of the period; exit 1 if any would differ",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=1,
            help="bill the batches of pairs in N processes at once (default 1)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        period = options["period"] or previous_period(timezone.now())
        try:
            period_bounds(period)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["jobs"] < 1:
            raise CommandError(f"--jobs: must be 1 or more, got {options['jobs']}")
        # Django's start-up heap out of the cyclic collector's reach: a run allocates millions of
        # objects, and each full collection scanned all of it (~60 ms each; ~0.25 s of a
        # 10,000-pair run, docs/performance.md, "Billing"). The forked --jobs children share it.
        gc.freeze()
        if options["verify"]:
            self._verify(period)
        else:
            self._run(period, jobs=options["jobs"])

    def _verify(self, period: str) -> None:
        checked, problems = settlements_verify(period=period)
        for problem in problems:
            self.stderr.write(self.style.ERROR(f"MISMATCH {problem}"))
        if problems:
            sys.exit(1)
        self.stdout.write(
            self.style.SUCCESS(f"verified {checked} settled settlement(s) of {period}: all match")
        )

    def _run(self, period: str, *, jobs: int) -> None:
        tty = self.stdout.isatty()
        started = time.monotonic()
        run = billing_run_start(period=period, trigger="command")
        pairs = list(
            BillingRunPair.objects.filter(run=run, done_at__isnull=True)
            .order_by("id")
            .values_list("host_id", "licensor_id")
        )
        batches = pairs_batches(run.pk, pairs)
        done = 0

        def progress(count: int) -> None:
            nonlocal done
            done += count
            if tty:
                elapsed = time.monotonic() - started
                self.stdout.write(
                    f"\r  billing {period}: {done}/{len(pairs)} pairs, {elapsed:.1f}s", ending=""
                )
                self.stdout.flush()

        batches_bill(run_id=run.pk, batches=batches, jobs=jobs, progress=progress)
        if tty and pairs:
            self.stdout.write("")
        for s in settlements_for_period_listing(period=period):
            self.stdout.write(
                f"{s.licensor_slug:<12} {s.host_slug:<12} {s.period} {s.currency} "
                f"{s.status:<9} {s.total_display:>14}  {s.line_count} line(s)  {s.pk}"
            )
        run.refresh_from_db()
        failed = list(
            BillingRunPair.objects.filter(run=run)
            .exclude(error="")
            .select_related("host", "licensor")
            .order_by("licensor__slug", "host__slug")
        )
        style = self.style.ERROR if failed else self.style.SUCCESS
        self.stdout.write(
            style(
                f"run {run.pk} of {period}: {run.status}, {run.pairs_done}/{run.pairs_total} "
                f"pairs, {run.pairs_failed} failed, {run.groups_count} groups, "
                f"{time.monotonic() - started:.2f}s"
            )
        )
        for pair in failed:
            self.stderr.write(
                self.style.ERROR(
                    f"FAILED licensor {pair.licensor.slug} / host {pair.host.slug}: {pair.error}"
                )
            )
        if failed:
            names = ", ".join(f"{p.licensor.slug}/{p.host.slug}" for p in failed)
            raise CommandError(
                f"{len(failed)} of {run.pairs_total} pair(s) could not be settled ({names}); "
                "the others were. Fix the cause and run the period again."
            )


def batches_bill(
    *, run_id: int, batches: list[list[Pair]], jobs: int, progress: Callable[[int], None]
) -> None:
    """Bill each batch (`billing_pairs_bill`: a transaction per batch; a pair that fails is
    recorded and the others of its batch are still billed), in `jobs` processes at once when
    there is more than one batch. Each batch locks its own pairs, so two processes never write
    the same settlements (docs/billing.md, "Batches")."""
    if jobs == 1 or len(batches) < 2:
        for batch in batches:
            billing_pairs_bill(run_id=run_id, pairs=batch)
            progress(len(batch))
        return
    # Forked children must not share this process's database socket: closed here, each
    # process (this one included, for the listing) opens its own when it next queries.
    connections.close_all()
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(batches)),
        mp_context=multiprocessing.get_context("fork"),
        initializer=_child_start,
        initargs=(os.getpid(),),
    )
    try:
        pending = {pool.submit(_batch_bill, run_id, batch): len(batch) for batch in batches}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                future.result()  # what a batch could not record as a failed pair: stop
                progress(pending.pop(future))
    finally:
        # On an error, the batches not started are dropped; those running finish (each is one
        # transaction) and a re-run bills the rest.
        pool.shutdown(wait=True, cancel_futures=True)


def _child_start(parent: int) -> None:
    """In each forked child, first: die with the command. Between batches a child waits on the
    pool's queue, whose pipe it holds both ends of: after a `kill -9` of the command it would
    wait there forever, holding its database connection (seen before this). On Linux the kernel
    sends it SIGTERM when the command dies; a batch it is inside then rolls back, as the
    command's own would."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the command died before the line above
        os._exit(1)


def _batch_bill(run_id: int, pairs: list[Pair]) -> int:
    """One batch, in a child process of `batches_bill`."""
    return billing_pairs_bill(run_id=run_id, pairs=pairs)
