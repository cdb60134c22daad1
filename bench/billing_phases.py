"""Where a run's time goes, 10,000 pairs against 250 over the same rows:
`python -m bench billing_phases [--rounds=N]`.

The two catalogs of `bench billing --many` that hold the same 1M rows (`billing.MANY`: 10,000
pairs of one model; `billing.WIDE`: 250 pairs of 40 models), each in its scratch database (the
names of `bench billing`, `BENCH_BILLING_DB` and the same with `_wide`; created, migrated and
dropped again). Each round runs, in a child process per run and alternating the two catalogs,
a first run (the month emptied of settlements before it) and then a re-run, each after a
CHECKPOINT, with a timer around each phase of a batch: the groups' read, the rating, the
settlements' assembly and writes (new settlements, lines and history by COPY, the drafts'
UPDATE), Django's model `__init__` of settlements, and the commit. The timers are wrappers
around the project's own functions (`_timed`), added in the child only. Prints per catalog and
run kind the median seconds of each phase, and what the 10,000 pairs cost beyond the 250 by
phase: the figures behind docs/performance.md, "Billing" ("What the 10,000 pairs cost").
"""

from __future__ import annotations

import collections
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import billing

PHASES = (
    "aggregate",
    "batches",
    "_groups_read",
    "pairs_rate",
    "settlements_write",
    "Settlement.__init__",
    "_flush",
    "values_copy",
    "settlement_events_record",
    "settlements_recompute",
    "commit",
)


def child() -> int:
    """In the child: Django up, timers around the phases, then the run as `run_billing` runs
    it; prints the phases' seconds as JSON."""
    import django

    django.setup()
    from django.db.backends.base.base import BaseDatabaseWrapper

    from billing import runs, settling
    from billing.models import BillingRunPair, Settlement

    spent: dict[str, float] = collections.defaultdict(float)

    def timed(owner: Any, name: str, label: str | None = None) -> None:
        inner = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label or name] += time.perf_counter() - started

        setattr(owner, name, wrapper)

    for name in (
        "_groups_read",
        "_flush",
        "values_copy",
        "settlement_events_record",
        "settlements_recompute",
    ):
        timed(settling, name)
    timed(runs, "pairs_rate")
    timed(runs, "settlements_write")
    timed(BaseDatabaseWrapper, "_commit", "commit")
    timed(Settlement, "__init__", "Settlement.__init__")

    started = time.perf_counter()
    run = runs.billing_run_start(period=billing.PERIOD, trigger="command")
    spent["aggregate"] = time.perf_counter() - started
    pairs = list(
        BillingRunPair.objects.filter(run=run, done_at__isnull=True)
        .order_by("id")
        .values_list("host_id", "licensor_id")
    )
    started = time.perf_counter()
    for batch in runs.pairs_batches(run.pk, pairs):
        runs.billing_pairs_bill(run_id=run.pk, pairs=batch)
    spent["batches"] = time.perf_counter() - started
    print(json.dumps(spent))
    return 0


def one_run(database: str) -> dict[str, float]:
    with billing.database(database):
        billing.checkpoint()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.billing_phases", "--child"],
            cwd=billing.ROOT,
            env=billing.child_env(),
            check=True,
            capture_output=True,
            text=True,
        )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> int:
    if "--child" in argv:
        return child()
    rounds = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--rounds=")), 3)
    shapes = {
        "10,000 pairs": (billing.DB, billing.MANY),
        "250 pairs": (billing.DB_WIDE, billing.WIDE),
    }
    results: dict[tuple[str, str], list[dict[str, float]]] = collections.defaultdict(list)
    try:
        for database, shape in shapes.values():
            with billing.database(database):
                billing.setup(shape)
                billing.generate(shape, 1, 1_000_000)
        for r in range(rounds):
            order = list(shapes) if r % 2 == 0 else list(reversed(shapes))
            for label in order:
                database, _ = shapes[label]
                with billing.database(database):
                    billing.settlements_forget()
                results[(label, "first run")].append(one_run(database))
                results[(label, "re-run")].append(one_run(database))
            print(f"  round {r + 1} of {rounds} done", flush=True)
    finally:
        for database, _ in shapes.values():
            with billing.database(database):
                billing.drop_database()

    def median(label: str, kind: str, phase: str) -> float:
        return statistics.median(x.get(phase, 0.0) for x in results[(label, kind)])

    print(f"median seconds of {rounds} rounds, in one process per run (child):")
    for kind in ("first run", "re-run"):
        print(f"  {kind}: " + " | ".join(f"{p}" for p in PHASES))
        for label in shapes:
            print(f"    {label:<13}" + " ".join(f"{median(label, kind, p):7.3f}" for p in PHASES))
        print(
            "    difference   "
            + " ".join(
                f"{median('10,000 pairs', kind, p) - median('250 pairs', kind, p):7.3f}"
                for p in PHASES
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
