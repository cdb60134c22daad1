"""The fault soak: `python -m bench.soak [--duration SECONDS]` (`make soak`, docs/reliability.md).

On loopback, with processes of its own only: a scratch PostgreSQL cluster (initdb + pg_ctl on a
free port; never the machine's shared server), a Redis, the app under gunicorn (2 sync workers)
and a Celery prefork worker. Client processes (bench/soak_clients.py) post batches of usage with
resends and corrections, to /api/v1/usage and /api/v1/events, retrying unanswered batches with the
same event ids. Meanwhile billing runs of the clients' month are sent to the worker one after the
other, and every few seconds the soak injects the next fault, in turn:

- `web_worker`: kill -9 a gunicorn worker that holds a client connection (mid-request);
- `postgres`: `pg_ctl stop -m immediate` (a crash: no checkpoint, WAL replay at start), start;
- `celery`: kill -9 the Celery worker and its pool children (during a billing run when one is
  running), start it again;
- `redis`: kill -9 the broker (its append-only file is fsynced at each write), start it again.

Then the clients stop, a last billing run goes through the worker without faults, and every
current settlement is approved (posting the ledger). Checked: every acknowledged record is stored
exactly once and as sent; claims and rows agree; no batch is stored in part; `verify_ledger` and
`run_billing --verify` pass; and the settlements equal, line for line, those of a clean run over
the same records (a fresh database of the same cluster, loaded with the stored records, billed by
`run_billing` without faults, approved). Exit 1 on any problem.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from bench import PRODUCTION_ENV
from bench.soak_checks import (
    check_acknowledged,
    check_keys,
    check_settlements,
    copy_usage,
    same_catalog,
    settlements,
    stuck_run_report,
)
from bench.soak_clients import client_main
from bench.soak_procs import (
    PYTHON,
    ROOT,
    ScratchPostgres,
    ScratchRedis,
    busy_workers,
    celery_worker,
    free_port,
    gunicorn,
    wait_port,
)
from bench.soak_scripts import CLEAN, CLIENTS, SETUP, VERIFY, catalog

FAULTS = ("web_worker", "postgres", "celery", "redis")
DB, CLEAN_DB = "tollgate_soak", "tollgate_soak_clean"
TERMINAL = ("done", "partial", "failed", "superseded")
INHERITED_NOT = {
    "PROMETHEUS_MULTIPROC_DIR",
    "CACHE_URL",
    "CELERY_RESULT_BACKEND",
    "STRIPE_API_KEY",
    "STRIPE_API_BASE",
    "STRIPE_WEBHOOK_SECRET",
}


class Soak:
    def __init__(
        self, duration: float, fault_every: float, base: Path, worker_log_level: str = "WARNING"
    ) -> None:
        self.duration, self.fault_every, self.base = duration, fault_every, base
        self.out = base / "clients"
        self.out.mkdir()
        now = datetime.now(UTC)
        month = now.year * 12 + now.month - 2  # the previous month: past, open, billable
        self.period = f"{month // 12:04d}-{month % 12 + 1:02d}"
        self.pg = ScratchPostgres(base)
        self.redis = ScratchRedis(base)
        self.port = free_port()
        self.env = {
            # Nothing of the caller's services: no shared cache, result backend or Stripe.
            **{k: v for k, v in os.environ.items() if k not in INHERITED_NOT},
            **PRODUCTION_ENV,
            "DJANGO_SETTINGS_MODULE": "config.settings",  # not pytest's test settings
            "DATABASE_URL": self.pg.url(DB),
            "CELERY_BROKER_URL": self.redis.url,
            # A pair task takes well under a second here: a killed worker's task comes back
            # 10-20 s later (this, then the worker's next sweep) instead of after 15 minutes.
            "CELERY_VISIBILITY_TIMEOUT": "10",
            "BILLING_RUN_STALE_SECONDS": "120",
            "TOLLGATE_THROTTLE_RATE": "100000/min",
            "LOG_LEVEL": "WARNING",
        }
        self.web = gunicorn(self.env, self.port, base / "web.log")
        self.worker = celery_worker(self.env, base / "worker.log", worker_log_level)
        self.faults: Counter[str] = Counter()
        self.notes: Counter[str] = Counter()
        self.runs: Counter[str] = Counter()
        self.stop_faults = threading.Event()
        self.stop_billing = threading.Event()
        self.clients: list[Any] = []
        self.threads: list[threading.Thread] = []

    def say(self, message: str) -> None:
        print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def manage(
        self, *args: str, database: str = DB, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, "DATABASE_URL": self.pg.url(database)},
            check=check,
            capture_output=True,
            text=True,
        )

    def django(self, script: str, database: str = DB) -> Any:
        """Run `script` in `manage.py shell`; its last line of output, read as JSON."""
        return json.loads(
            self.manage("shell", "-c", script, database=database).stdout.split("\n")[-2]
        )

    # --- setup -----------------------------------------------------------------------------

    def prepare(self) -> list[str]:
        """The soak's database (migrated, the catalog, an API key per host) and the clean run's,
        copied from it before any usage: the same catalog with the same ids."""
        with psycopg.connect(self.pg.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {DB}")
        self.manage("migrate", "--noinput")
        keys = self.django(SETUP % {"catalog": json.dumps(catalog())})
        with psycopg.connect(self.pg.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {CLEAN_DB} TEMPLATE {DB}")
        return keys

    # --- faults ----------------------------------------------------------------------------

    def _fault(self, kind: str) -> None:
        if kind == "web_worker":
            master = self.web.proc.pid if self.web.proc else 0
            busy: list[int] = []
            for _ in range(40):  # up to 2 s for a worker to be mid-request
                busy = busy_workers(master, self.port)
                if busy:
                    break
                time.sleep(0.05)
            if not busy:
                self.notes["web_worker_idle_skipped"] += 1
                return
            os.kill(random.choice(busy), signal.SIGKILL)
        elif kind == "postgres":
            self.pg.crash()
            time.sleep(1.0)
            self.pg.start()
        elif kind == "celery":
            if self._run_running(wait=5.0):
                self.notes["celery_killed_during_a_run"] += 1
            self.worker.kill()
            time.sleep(0.5)
            self.worker.start()
        elif kind == "redis":
            self.redis.kill()
            time.sleep(0.5)
            self.redis.start()
        self.faults[kind] += 1

    def _run_running(self, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.pg.url(DB), connect_timeout=2) as conn:
                    if conn.execute(
                        "SELECT 1 FROM billing_billingrun WHERE status = 'running' LIMIT 1"
                    ).fetchone():
                        return True
            except psycopg.Error:
                pass
            time.sleep(0.2)
        return False

    def fault_loop(self) -> None:
        for kind in itertools.cycle(FAULTS):
            if self.stop_faults.wait(self.fault_every):
                return
            try:
                self._fault(kind)
            except Exception as exc:  # a fault that could not be injected is reported, not fatal
                self.notes[f"{kind}_error"] += 1
                self.say(f"fault {kind}: {exc!r}")

    # --- billing ---------------------------------------------------------------------------

    def _last_run(self) -> tuple[int, str] | None:
        with psycopg.connect(self.pg.url(DB), connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT id, status FROM billing_billingrun WHERE period = %s ORDER BY id DESC"
                " LIMIT 1",
                (self.period,),
            ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def billing_run(self, timeout: float) -> str:
        """Send one run of the period to the worker and wait for it to end: its status, or
        'lost' (no run started or ended within `timeout`: the next one supersedes it), or
        'not_sent_...' (the database or the broker was down at that moment: tried again)."""
        from celery import Celery

        app = Celery(broker=self.redis.url, set_as_current=False)
        try:
            before = self._last_run()
        except psycopg.Error:
            return "not_sent_database_down"
        try:
            app.send_task("billing.tasks.run_monthly_billing", args=[self.period])
        except Exception:
            return "not_sent_broker_down"
        finally:
            app.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if self.stop_billing.is_set():
                return "cut_short"  # the soak's end: the last run supersedes it
            try:
                last = self._last_run()
            except psycopg.Error:
                continue
            if last and (before is None or last[0] > before[0]) and last[1] in TERMINAL:
                return last[1]
        return "lost"

    def billing_loop(self) -> None:
        while not self.stop_billing.is_set():
            self.runs[self.billing_run(timeout=60)] += 1
            self.stop_billing.wait(2.0)

    # --- the soak --------------------------------------------------------------------------

    def run(self) -> int:
        self.say(
            f"scratch PostgreSQL {self.pg.bin} on port {self.pg.port}, Redis on port "
            f"{self.redis.port}, gunicorn on port {self.port}, period {self.period}, "
            f"{self.duration:.0f}s, a fault every {self.fault_every:.0f}s"
        )
        self.pg.init()
        self.pg.start()
        self.redis.start()
        try:
            return self._soak()
        finally:
            # Also after an error or ^C: nothing of the soak outlives it.
            self.stop_faults.set()
            self.stop_billing.set()
            # A fault under way (a worker killed, then started again) ends before the processes
            # are stopped, or it would start one after them.
            for t in self.threads:
                t.join(timeout=30)
            for c in self.clients:
                if c.is_alive():
                    c.kill()
                    c.join()
            for p in (self.worker, self.web):
                p.stop()
            self.redis.stop()
            self.pg.stop()

    def _soak(self) -> int:
        keys = self.prepare()
        self.say("database ready; starting gunicorn, the worker and the clients")
        self.web.start()
        wait_port(self.port, 120)
        self.worker.start()
        stop_file = self.base / "stop"
        hard_deadline = time.monotonic() + self.duration + 120
        ctx = mp.get_context("spawn")
        self.clients = clients = [
            ctx.Process(
                target=client_main,
                args=(
                    i,
                    f"http://127.0.0.1:{self.port}",
                    keys[i],
                    self.period,
                    str(self.out),
                    1000 + i,
                    str(stop_file),
                    hard_deadline,
                ),
            )
            for i in range(CLIENTS)
        ]
        for c in clients:
            c.start()
        # Billing starts once every host has usage in the month (a host whose first usage came
        # after the month's first completed run would be late: docs/billing.md).
        self._wait_every_host_acked(timeout=120)
        started = time.monotonic()
        self.threads = threads = [
            threading.Thread(target=self.fault_loop, daemon=True),
            threading.Thread(target=self.billing_loop, daemon=True),
        ]
        for t in threads:
            t.start()
        # The duration, and then until every kind of fault was injected once (30 s at most).
        while time.monotonic() - started < self.duration or (
            any(self.faults[k] == 0 for k in FAULTS)
            and time.monotonic() - started < self.duration + 30
        ):
            time.sleep(0.5)
        self.stop_faults.set()
        threads[0].join()
        self.say(f"faults stopped: {dict(self.faults)}; stopping the clients")
        stop_file.touch()
        for c in clients:
            c.join(timeout=180)
        self.stop_billing.set()
        threads[1].join()
        self.stop_billing.clear()
        self._heal()
        self.say("clients stopped; the last billing run")
        final = self.billing_run(timeout=300)
        self.say(f"last billing run (no faults): {final}")
        if final != "done":
            print("\n".join(stuck_run_report(self.pg.url(DB), self.redis.url, self.worker.log)))
        return self._check(final)

    def _wait_every_host_acked(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        acked = self.out / "acked.jsonl"
        while time.monotonic() < deadline:
            # Whole lines only: a client may be writing the last one.
            lines = acked.read_text().split("\n")[:-1] if acked.exists() else []
            if len({json.loads(line)["host"] for line in lines}) == CLIENTS:
                return
            time.sleep(0.2)
        raise RuntimeError("the clients got no answer within two minutes: see web.log")

    def _heal(self) -> None:
        """After the faults: every process up (a fault may have been cut short)."""
        if not self.pg.running():
            self.pg.start()
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start()
        if self.worker.proc is None or self.worker.proc.poll() is not None:
            self.worker.start()

    # --- the checks ------------------------------------------------------------------------

    def _check(self, final: str) -> int:
        problems: list[str] = []
        if final != "done":
            problems.append(f"the last billing run ended {final}, not done")
        for i, c in enumerate(self.clients):
            if c.exitcode != 0:
                problems.append(f"client {i} ended with exit code {c.exitcode}")
        stats: Counter[str] = Counter()
        path = self.out / "stats.jsonl"
        for line in path.read_text().splitlines() if path.exists() else ():
            stats.update({k: v for k, v in json.loads(line).items() if k != "host"})
        hosts = {i: f"soak-host-{i}" for i in range(CLIENTS)}
        figures, found = check_acknowledged(self.pg.url(DB), self.out, hosts)
        problems += found
        if (self.out / "errors.jsonl").exists():
            errors = (self.out / "errors.jsonl").read_text().splitlines()
            problems.append(f"{len(errors)} record(s) or batch(es) refused, e.g. {errors[:2]}")
        rows, found = check_keys(self.pg.url(DB))
        problems += found
        books = self.django(VERIFY % {"period": self.period})
        for name, key in (("verify_ledger", "verify_ledger"), ("run_billing --verify", "verify")):
            if books[key]["code"] != 0:
                problems.append(f"{name} exited {books[key]['code']}: {books[key]['out'][-1500:]}")
        # The clean run: a fresh database, the same catalog, the stored records, no faults.
        self.say("checks of the records and the ledger done; the clean run")
        problems += same_catalog(self.pg.url(DB), self.pg.url(CLEAN_DB))
        copied = copy_usage(self.pg.url(DB), self.pg.url(CLEAN_DB))
        clean = self.django(CLEAN % {"period": self.period}, database=CLEAN_DB)
        if clean["run"]["code"] != 0:
            problems.append(f"the clean run failed: {clean['run']['out'][-1500:]}")
        compared, found = check_settlements(self.pg.url(DB), self.pg.url(CLEAN_DB), self.period)
        problems += found
        total = sum((Decimal(r[5]) for r in settlements(self.pg.url(DB), self.period)), Decimal(0))
        verdict = "DIFFER from" if found else "equal line for line to"
        self._report(stats, figures, rows, books, (compared, verdict, copied, total), problems)
        return 1 if problems else 0

    def _report(
        self,
        stats: Counter[str],
        figures: dict[str, int],
        rows: int,
        books: dict[str, Any],
        clean: tuple[int, str, int, Decimal],
        problems: list[str],
    ) -> None:
        print("\n== soak summary ==")
        print(
            f"duration {self.duration:.0f}s, period {self.period}, {CLIENTS} clients, "
            "gunicorn 2 sync workers, Celery prefork worker (concurrency 2)"
        )
        print(
            "faults injected: "
            + ", ".join(f"{k} {self.faults[k]}" for k in FAULTS)
            + f" (total {sum(self.faults.values())})"
        )
        if self.notes:
            print("notes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.notes.items())))
        print(
            "billing runs under faults: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.runs.items()))
        )
        print(
            f"clients: {stats['batches']} batches, {stats['attempts']} posts; retried after "
            f"timeout {stats['retry_timeout']}, connection error {stats['retry_connection']}, "
            + ", ".join(
                f"{k.removeprefix('retry_')} {v}"
                for k, v in sorted(stats.items())
                if k.startswith("retry_http")
            )
            + f"; {stats['resends_sent']} resends and {stats['corrections_sent']} corrections sent"
        )
        print(
            f"acknowledged: {stats['acked_accepted']} accepted, {stats['acked_duplicate']} "
            f"duplicate, of which {figures['acknowledged_distinct'] - stats['acked_accepted']}"
            " were records whose first answer was lost (stored, then answered duplicate on the"
            f" retry); batches given up {stats['batches_given_up']}"
        )
        print(
            f"checked: {figures['acknowledged_distinct']} acknowledged records each stored "
            f"exactly once as sent; {rows} rows = claims, none doubled; "
            f"{figures['partial_batches']} partial batches; unacknowledged batches: "
            f"{figures['unacknowledged_batches_stored_whole']} stored whole, "
            f"{figures['unacknowledged_batches_not_stored']} not stored"
        )
        print(
            f"checked: {books['approved']} settlements approved; verify_ledger: "
            f"{'ok' if books['verify_ledger']['code'] == 0 else 'FAILED'}; run_billing --verify: "
            f"{(books['verify']['out'].strip().splitlines() or ['FAILED'])[-1]}"
        )
        print(
            f"checked: {clean[0]} settlements (total {clean[3]}) {clean[1]} a clean run over the"
            f" same {clean[2]} rows (claims + records)"
        )
        if problems:
            print(f"FAILED: {len(problems)} problem(s)")
            for p in problems[:50]:
                print(f"  - {p}")
        else:
            print("OK: nothing lost, nothing doubled")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--duration", type=float, default=600, help="seconds of faults (600)")
    parser.add_argument(
        "--fault-every",
        type=float,
        default=None,
        help="seconds between faults (default: duration / 40, 3 to 10)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--worker-log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING"),
        help="the Celery worker's log level (WARNING; INFO logs each task received and ended)",
    )
    args = parser.parse_args(argv)
    # SIGTERM (a timeout's, a CI job's) unwinds like ^C: the servers and the worker it started
    # are stopped by Soak.run's finally instead of outliving it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    every = args.fault_every or min(10.0, max(3.0, args.duration / 40))
    base = Path(tempfile.mkdtemp(prefix="tollgate-soak-"))
    os.chmod(base, 0o755)  # noqa: S103 (the postgres user traverses it when we are root)
    try:
        return Soak(args.duration, every, base, args.worker_log_level).run()
    finally:
        if args.keep:
            print(f"scratch directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
