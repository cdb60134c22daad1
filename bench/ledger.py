"""Ledger benchmark: `python -m bench ledger [--quick] [--writers N] [--entries N] [--repeats K]
[--batch N] [--only=TEXT ...]` (--only: the methods whose name contains TEXT).

Entries per second for two-posting entries (debit a host receivable, credit a licensor payable)
from `--writers` concurrent processes (default 4), each with its own connection, against the
scratch database `tollgate_bench_ledger` on DATABASE_URL's server (created, migrated and dropped
here) and its copy `tollgate_bench_ledger_nochain`. The methods:

1. `journal_post` — the real service, each entry in its own transaction: one call of
   ledger_post_entry (idempotency pre-check, the chain lock, the head, the SHA-256 hash, the
   entry and postings), then the commit with the deferred balance checks, the lock held until
   the commit is durable;
2. `journal_post, N per commit` — the real service, called N (`--batch`, default 20) times in
   one transaction, as a bulk caller that posts entry by entry does: the chain lock and the
   durable commit are paid once per N entries, the round trip still once per entry;
3. `journal_post_many, N per call` — the bulk service: N entries in one call (one round trip,
   the chain lock taken once) and one transaction;
4. `journal_post_many, N per call, no chain` — the same against the copy, where
   ledger_post_entries and ledger_post_entry are replaced by versions without lock, head and
   hash, and the chain columns and chain-link trigger are dropped: what the chain costs the bulk
   path;
5. `journal_post, no chain` — method 1 against the copy: what the chain costs one entry;
6. `raw psycopg, no chain` — the entry and postings INSERTs (one statement) and the commit from
   plain psycopg, no Django, on the copy, one entry per transaction: the floor of the database
   with every other trigger in place (the baseline of the methods that commit every entry);
7. `raw psycopg, N per commit, no chain` — the same INSERTs, N entries pipelined (one round trip)
   in one transaction like `journal_post_many`: the baseline of the batched methods (batch
   compared with batch, so that a ratio is not the count of commits or round trips).

All 7 x `--writers` processes start and warm up first; then the methods take turns, run by run
(`--repeats` rounds), so that the noise of a shared machine falls on all of them alike. The
median and the spread (min-max) are printed, with the ratio to the raw baseline that commits as
often (every entry, or every N). Everything runs on
this machine (the writers compete with PostgreSQL for the same cores). Record the output in
docs/ledger.md, "Performance", and docs/performance.md, "Ledger".
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench import PRODUCTION_ENV

ROOT = Path(__file__).resolve().parent.parent
# Other names when several benches share a server.
DB = os.environ.get("BENCH_LEDGER_DB", "tollgate_bench_ledger")
BATCH = 20  # default entries per transaction of the batched methods (a payout run, a bulk approval)


def _methods(batch: int) -> list[str]:
    return [
        "journal_post",
        f"journal_post, {batch} per commit",
        f"journal_post_many, {batch} per call",
        f"journal_post_many, {batch} per call, no chain",
        "journal_post, no chain",
        "raw psycopg, no chain",
        f"raw psycopg, {batch} per commit, no chain",
    ]


WARMUP = 50  # entries per writer before each method's timed runs

NOCHAIN = os.environ.get("BENCH_LEDGER_NOCHAIN_DB", DB + "_nochain")
RELAX_CHAIN = """
ALTER TABLE ledger_journalentry ALTER COLUMN sequence DROP NOT NULL,
    ALTER COLUMN prev_hash DROP NOT NULL, ALTER COLUMN hash DROP NOT NULL;
DROP TRIGGER ledger_entry_chain_link ON ledger_journalentry;
CREATE OR REPLACE FUNCTION ledger_post_entry(
    p_key varchar, p_memo text, p_reference_type varchar, p_reference_id varchar,
    p_reverses bigint, p_content text,
    p_accounts bigint[], p_amounts bigint[], p_currencies varchar[],
    OUT entry_id bigint, OUT created boolean, OUT entry_sequence bigint,
    OUT entry_created_at timestamptz, OUT entry_prev_hash varchar, OUT entry_hash varchar
) LANGUAGE plpgsql AS $$
BEGIN
    SELECT e.id INTO entry_id FROM ledger_journalentry e WHERE e.idempotency_key = p_key;
    IF FOUND THEN
        created := false;
        RETURN;
    END IF;
    entry_created_at := clock_timestamp();
    INSERT INTO ledger_journalentry (idempotency_key, memo, reference_type, reference_id,
        reverses_id, created_at)
    VALUES (p_key, p_memo, p_reference_type, p_reference_id, p_reverses, entry_created_at)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO entry_id;
    IF entry_id IS NULL THEN
        SELECT e.id INTO entry_id FROM ledger_journalentry e WHERE e.idempotency_key = p_key;
        created := false;
        RETURN;
    END IF;
    INSERT INTO ledger_posting (entry_id, account_id, amount, currency)
    SELECT entry_id, t.a, t.m, t.c FROM unnest(p_accounts, p_amounts, p_currencies) AS t(a, m, c);
    created := true;
END
$$;
CREATE OR REPLACE FUNCTION ledger_post_entries(
    p_keys varchar[], p_memos text[], p_reference_types varchar[], p_reference_ids varchar[],
    p_reverses bigint[], p_contents text[],
    p_posting_entry integer[], p_accounts bigint[], p_amounts bigint[], p_currencies varchar[]
) RETURNS TABLE (
    entry_id bigint, created boolean, entry_sequence bigint, entry_created_at timestamptz,
    entry_prev_hash varchar, entry_hash varchar
) LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    made boolean[];
    stamp timestamptz := clock_timestamp();
BEGIN
    SELECT array_agg(e.id ORDER BY k.i) INTO ids
    FROM unnest(p_keys) WITH ORDINALITY AS k(key, i)
    LEFT JOIN ledger_journalentry e ON e.idempotency_key = k.key;
    SELECT array_agg(x IS NULL ORDER BY i) INTO made FROM unnest(ids) WITH ORDINALITY AS t(x, i);
    WITH inserted AS (
        INSERT INTO ledger_journalentry AS e (idempotency_key, memo, reference_type,
            reference_id, reverses_id, created_at)
        SELECT p_keys[k.i], p_memos[k.i], p_reference_types[k.i], p_reference_ids[k.i],
            p_reverses[k.i], stamp
        FROM generate_subscripts(p_keys, 1) AS k(i) WHERE made[k.i] ORDER BY k.i
        RETURNING e.id, e.idempotency_key
    )
    SELECT array_agg(coalesce(ins.id, ids[k.i]) ORDER BY k.i) INTO ids
    FROM unnest(p_keys) WITH ORDINALITY AS k(key, i)
    LEFT JOIN inserted ins ON ins.idempotency_key = k.key;
    INSERT INTO ledger_posting (entry_id, account_id, amount, currency)
    SELECT ids[t.e], t.a, t.m, t.c
    FROM unnest(p_posting_entry, p_accounts, p_amounts, p_currencies) AS t(e, a, m, c)
    WHERE made[t.e];
    RETURN QUERY
    SELECT ids[k.i], made[k.i], NULL::bigint, CASE WHEN made[k.i] THEN stamp END,
        NULL::varchar, NULL::varchar
    FROM generate_subscripts(p_keys, 1) AS k(i) ORDER BY k.i;
END
$$;
"""


def _server_url(database: str) -> str:
    base = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def _create_databases() -> None:
    """Migrate the scratch database, open the bench accounts, then copy it for the no-chain
    methods and relax the copy's chain."""
    _drop_databases()
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {DB}")
    env = {**os.environ, "DATABASE_URL": _server_url(DB), **PRODUCTION_ENV}
    for command in (["migrate", "--noinput", "-v", "0"], ["shell", "-v", "0", "-c", SETUP]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True)
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {NOCHAIN} TEMPLATE {DB}")
    with psycopg.connect(_server_url(NOCHAIN), autocommit=True) as conn:
        conn.execute(RELAX_CHAIN)


def _drop_databases() -> None:
    with psycopg.connect(_server_url("postgres"), autocommit=True) as admin:
        for name in (NOCHAIN, DB):
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


SETUP = """
from bench.ledger import _accounts
_accounts()
"""


def _django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.update(PRODUCTION_ENV)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _accounts() -> tuple[Any, Any]:
    from ledger.models import AccountKind
    from ledger.services import account_for
    from licensing.models import Host, Licensor

    host, _ = Host.objects.get_or_create(slug="bench-host", defaults={"currency": "USD"})
    licensor, _ = Licensor.objects.get_or_create(slug="bench-licensor")
    return (
        account_for(owner=host, kind=AccountKind.RECEIVABLE, currency="USD"),
        account_for(owner=licensor, kind=AccountKind.PAYABLE, currency="USD"),
    )


def _writer(
    method: str,
    tag: str,
    entries: int,
    repeats: int,
    batch: int,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    """One writer process: warm up, wait for everyone, then at each `go` post `entries` entries,
    timed, each in its own transaction (or `batch` per transaction for the batched methods)."""
    url = _server_url(NOCHAIN if "no chain" in method else DB)
    _django(url)
    from django.db import connection, transaction

    from ledger.services import EntrySpec, PostingSpec, journal_post, journal_post_many

    debit, credit = _accounts()
    legs = [
        PostingSpec(account=debit, amount_minor=1250),
        PostingSpec(account=credit, amount_minor=-1250),
    ]
    raw = psycopg.connect(url) if method.startswith("raw") else None

    def raw_insert(key: str) -> None:
        """The entry and its postings in one statement (one round trip; none to wait for in a
        pipeline)."""
        assert raw is not None
        raw.execute(
            "WITH e AS (INSERT INTO ledger_journalentry (idempotency_key, memo, reference_type,"
            " reference_id, created_at) VALUES (%s, 'bench', 'bench', '', now()) RETURNING id)"
            " INSERT INTO ledger_posting (entry_id, account_id, amount, currency)"
            " SELECT e.id, p.account, p.amount, 'USD' FROM e,"
            " (VALUES (%s::bigint, 1250), (%s::bigint, -1250)) AS p(account, amount)",
            [key, debit.pk, credit.pk],
        )

    def post(key: str) -> None:
        if raw is None:
            journal_post(idempotency_key=key, memo="bench", postings=legs, reference_type="bench")
            return
        with raw.transaction():
            raw_insert(key)

    def post_together(keys: list[str]) -> None:
        """One transaction for `keys`: the chain lock and the durable commit (an fsync) are paid
        once per batch instead of once per entry."""
        if raw is not None:
            # One commit and, pipelined, one round trip for the batch, as journal_post_many.
            with raw.transaction(), raw.pipeline():
                for key in keys:
                    raw_insert(key)
            return
        if method.startswith("journal_post_many"):
            # One round trip too.
            journal_post_many(
                entries=[
                    EntrySpec(
                        idempotency_key=k, memo="bench", postings=legs, reference_type="bench"
                    )
                    for k in keys
                ]
            )
            return
        with transaction.atomic():
            for key in keys:
                post(key)

    per_transaction = batch if f"{batch} per " in method else 1
    for first in range(0, WARMUP, per_transaction):
        post_together(
            [f"{tag}:warm:{i}" for i in range(first, min(first + per_transaction, WARMUP))]
        )
    ready.wait()
    for repeat in range(repeats):
        go.wait()
        start = time.monotonic()
        for first in range(0, entries, per_transaction):
            last = min(first + per_transaction, entries)
            post_together([f"{tag}:r{repeat}:{i}" for i in range(first, last)])
        out.put((repeat, start, time.monotonic()))
    connection.close()
    if raw is not None:
        raw.close()


def _measure(
    writers: int, entries: int, repeats: int, batch: int, methods: list[str]
) -> dict[str, list[float]]:
    """Entries/s of each method and run: all writers' entries over the wall time from the first
    start to the last finish (CLOCK_MONOTONIC is one clock for every process on the machine)."""
    context = mp.get_context("spawn")
    ready = context.Barrier(writers * len(methods) + 1)
    go = {method: context.Barrier(writers + 1) for method in methods}
    out = {method: context.Queue() for method in methods}
    processes = [
        context.Process(
            target=_writer,
            args=(method, f"{m}:w{i}", entries, repeats, batch, ready, go[method], out[method]),
        )
        for m, method in enumerate(methods)
        for i in range(writers)
    ]
    for process in processes:
        process.start()
    ready.wait(timeout=300)
    rates: dict[str, list[float]] = {method: [] for method in methods}
    for _ in range(repeats):
        for method in methods:
            go[method].wait(timeout=300)
            spans = [out[method].get(timeout=300)[1:] for _ in range(writers)]
            wall = max(end for _, end in spans) - min(start for start, _ in spans)
            rates[method].append(writers * entries / wall)
    for process in processes:
        process.join(timeout=60)
        if process.exitcode != 0:
            raise RuntimeError(f"a writer failed (exit code {process.exitcode})")
    return rates


def _verify(url: str) -> str:
    env = {**os.environ, "DATABASE_URL": url, **PRODUCTION_ENV}
    result = subprocess.run(
        [sys.executable, "manage.py", "verify_ledger"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (result.stdout + result.stderr).strip().splitlines() or ["?"]
    return f"exit {result.returncode}: {lines[0]} / {lines[-1]}"


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    writers = _option(argv, "--writers", 4)
    entries = _option(argv, "--entries", 200 if quick else 400)
    repeats = _option(argv, "--repeats", 1 if quick else 3)
    batch = _option(argv, "--batch", BATCH)
    started = time.monotonic()
    _create_databases()
    try:
        with psycopg.connect(_server_url(DB), autocommit=True) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            sync = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
        import django

        print(
            f"PostgreSQL {server} (synchronous_commit={sync}), psycopg {psycopg.__version__},"
            f" Django {django.get_version()}, {os.cpu_count()} cores, writers on the same machine"
        )
        print(
            f"{writers} writer processes per method x {entries} two-posting entries per run,"
            f" one transaction per entry (but {batch} in the batched methods), {repeats} run(s)"
            " per method"
            f" (interleaved) after {WARMUP} warm-up entries per writer; tables start empty"
        )
        only = [a.split("=", 1)[1] for a in argv if a.startswith("--only=")]
        methods = [m for m in _methods(batch) if not only or any(o in m for o in only)]
        results = _measure(writers, entries, repeats, batch, methods)
        # Each method against the raw baseline that commits as often: every entry, or every N.
        single, batched = _methods(batch)[-2:]
        baselines = {
            name: statistics.median(results[name]) if name in results else float("nan")
            for name in (single, batched)
        }
        print(
            f"{'method':<42} {'entries/s (median)':>19} {'spread (min-max)':>18} {'ratio':>7}"
            f"  against"
        )
        for method, rates in results.items():
            median = statistics.median(rates)
            spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
            against = batched if f"{batch} per " in method else single
            print(
                f"{method:<42} {median:>19,.0f} {spread:>18} {median / baselines[against]:>7.2f}"
                f"  {against}"
            )
        print(f"chain written by the chained methods: verify_ledger {_verify(_server_url(DB))}")
        print(f"total {time.monotonic() - started:.0f} s")
    finally:
        _drop_databases()
    return 0


def _option(argv: list[str], name: str, default: int) -> int:
    for arg in argv:
        if arg.startswith(name + "="):
            return int(arg.split("=", 1)[1])
    return default


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
