"""Ingestion benchmark: `python -m bench ingest [--quick] [--duration=S] [--rows=N] [--repeats=K]
[--clients=C] [--workers=W] [--no-events]`.

For each table state (empty, then holding `--rows` records, default 10M, spread over 10 earlier
months, with their claims; `--rows=0`: the empty state only), `--repeats` rounds (default 3),
each of:

1. the endpoint phases: the real app under gunicorn (`--workers` sync workers, default two per
   core as in production, config/gunicorn.py; API-key authentication, throttle, DEBUG off)
   against the scratch database `tollgate_bench_ingest` (or $BENCH_INGEST_DB; created, and
   dropped at the end), loaded by `--clients` processes (default 4) with httpx, each posting
   10,000-record batches (9,000 fresh + 1,000 resent from its previous batch; event ids are
   random-looking UUIDs, like the baselines' and the preload's) for `--duration` seconds: once to
   POST /api/v1/usage, and once (unless `--no-events`) the same records as CloudEvents batches
   to POST /api/v1/events (LiteLLM's shape: `bench/ingest_load.py`), in alternating order from
   round to round, on the same server, clients and connections;
2. raw psycopg COPY, into `usage_record` alone (the target's literal baseline,
   docs/performance.md), of as many records as /api/v1/usage stored in step 1;
3. the same count into `usage_key` + `usage_record`, the two tables the endpoint writes (the
   storage cost of exactly-once itself, without HTTP, JSON or validation);
4. the same count into `bench_plain`, one plain (unpartitioned) table with the same columns and
   only a UNIQUE (host_id, event_id): the reference of docs/performance.md, "Writing usage rows",
   topped up (untimed) at the start of every round to as many rows as usage_record holds.

Like with like: every rate compared is of rows stored (the endpoint's records/s counts only the
records it accepted, not the resent duplicates, which it also printed before as "records/s"); each
COPY baseline runs on as many connections as the endpoint has gunicorn workers (each worker holds
one), each connection copying its share in one transaction; and the baselines' rows are encoded
into COPY text before the clock starts (the endpoint's request bodies are also built before its
clock starts; decoding them is the endpoint's work). /api/v1/events is compared with
/api/v1/usage in the same round: the same records, the same table state (give or take the
other phase's rows), stored rows against stored rows.

Each round starts with an untimed ANALYZE of the tables and an untimed read of every table and
index the phases write into the page cache (`warm`), and each endpoint phase with an ANALYZE of
usage_key and usage_record (what autovacuum, off on this server, would do; without it the phase
after another planned for the table as it was before the other's rows). Every timed phase
starts right after a CHECKPOINT, and the phases interleave, so checkpoints, machine noise and
table growth fall on the endpoint and the baselines alike.
Printed per round and as medians (min-max): stored records/s (and all records/s, resends included),
rows/s of each baseline, the per-round ratios stored records/s / COPY rows/s against each baseline
and events / usage, p50/p99 per batch, the gunicorn workers' CPU time per stored record (what the
server's Python costs, whatever else the machine does), PostgreSQL's CPU time per stored row of
every phase, endpoint and COPY alike (all `postgres` processes: what the database spends on a
row, which bounds how close the endpoint can come to each baseline on cores they share), the
load average at the round's start, and the peak RSS of a worker.

Everything runs on this machine (the load generator competes with the server and PostgreSQL for
the same cores, as in docs/performance.md). Record the output in docs/performance.md, "Ingestion".
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import PRODUCTION_ENV
from bench.ingest_load import (
    BATCH,
    DEFAULT_CATEGORY,
    DUPLICATES,
    EVENT_MAPPING,
    PYTHON,
    ROOT,
    checkpoint,
    http_run,
    postgres_cpu,
    serve,
    worker_peak_rss,
)

ADMIN_URL = os.environ.get("BENCH_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# Another name when several benches share a server.
DB = os.environ.get("BENCH_INGEST_DB", "tollgate_bench_ingest")
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB
__all__ = ["BATCH", "DUPLICATES", "PYTHON", "ROOT"]

SETUP = """
from licensing.models import *
from licensing.services import api_key_create
licensor, _ = Licensor.objects.get_or_create(slug="bench-licensor", defaults={"name": "B"})
host, _ = Host.objects.get_or_create(slug="bench-host", defaults={"name": "B", "currency": "USD"})
host.event_mapping = @MAPPING@
host.default_customer_category = @CATEGORY@
host.save()
lic, _ = License.objects.get_or_create(
    slug="bench-license", licensor=licensor, defaults={"name": "B"})
LicenseVersion.objects.get_or_create(license=lic, label="v1", defaults={
    "effective_from": "2020-01-01T00:00:00Z", "currency": "USD",
    "rules": [{"charge": {"type": "revenue_share", "percent": "10"}}]})
LicensedModel.objects.get_or_create(
    slug="bench-model", defaults={"licensor": licensor, "license": lic})
print(host.pk, LicensedModel.objects.get(slug="bench-model").pk, lic.pk, licensor.pk)
print(api_key_create(host=host).key)
""".replace("@MAPPING@", repr(EVENT_MAPPING)).replace("@CATEGORY@", repr(DEFAULT_CATEGORY))


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": DB_URL,
        **PRODUCTION_ENV,
        "TOLLGATE_THROTTLE_RATE": "100000/min",  # the throttle runs, but never limits the bench
        "LOG_LEVEL": "WARNING",
    }


def _manage(*args: str) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def scratch_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def scratch_drop(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def django_on_scratch(name: str) -> None:
    """The scratch database `name` created afresh and migrated, then this process's Django set
    up on it (with the bench's environment): for the in-process benches."""
    scratch_drop(name)
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    env = {**_env(), "DATABASE_URL": scratch_url(name)}
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def prepare_database() -> tuple[list[int], str]:
    scratch_drop(DB)
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {DB}")
    _manage("migrate", "--noinput")
    ids_line, key = _manage("shell", "-c", SETUP).strip().splitlines()[-2:]
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute(PLAIN_TABLE)
    return [int(x) for x in ids_line.split()], key


# The reference: usage_record's columns in one plain table whose only index is the idempotency key.
PLAIN_TABLE = """
CREATE TABLE bench_plain (
    host_id bigint NOT NULL, event_id varchar(128) NOT NULL, model_id bigint NOT NULL,
    license_id bigint NOT NULL, licensor_id bigint NOT NULL, occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL, customer_category varchar(16) NOT NULL,
    input_tokens bigint NOT NULL, cached_input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL, requests bigint NOT NULL, revenue numeric(20, 6) NOT NULL,
    currency varchar(3) NOT NULL, region varchar(2) NOT NULL, customer_ref varchar(128) NOT NULL,
    corrects varchar(128) NOT NULL, late boolean NOT NULL, content_hash bytea NOT NULL,
    UNIQUE (host_id, event_id)
)
"""
RECORD_COLUMNS = (
    "host_id, event_id, model_id, license_id, licensor_id, occurred_at, received_at,"
    " customer_category, input_tokens, cached_input_tokens, output_tokens, requests, revenue,"
    " currency, region, customer_ref, corrects, late, content_hash"
)


def preload(conn: psycopg.Connection, ids: list[int], rows: int) -> float:
    """`rows` records and their claims, over the 10 months before this one, with random UUID
    event ids (docs/performance.md's trap: the unique index grows with them)."""
    host, model, license, licensor = ids
    now = datetime.now(UTC)
    first = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(days=300)
    t0 = time.perf_counter()
    with conn.transaction():
        for k in range(-11, 1):
            index = now.year * 12 + now.month - 1 + k
            y, m = index // 12, index % 12 + 1
            ny, nm = (index + 1) // 12, (index + 1) % 12 + 1
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS usage_record_p{y:04d}_{m:02d} PARTITION OF"
                f" usage_record FOR VALUES FROM ('{y}-{m:02d}-01Z') TO ('{ny}-{nm:02d}-01Z')"
            )
        conn.execute(
            "CREATE TEMP TABLE pre AS SELECT gen_random_uuid()::text AS event_id,"
            " %s::timestamptz + (random() * 300 * 86400) * interval '1 second' AS occurred_at"
            " FROM generate_series(1, %s)",
            (first, rows),
        )
        conn.execute(
            "INSERT INTO usage_key SELECT %s, event_id, '\\x00'::bytea, occurred_at FROM pre",
            (host,),
        )
        for table in ("usage_record", "bench_plain"):
            conn.execute(
                f"INSERT INTO {table} ({RECORD_COLUMNS}) SELECT %s, event_id, %s, %s, %s,"
                " occurred_at, now(), 'commercial', 1000, 0, 200, 1, 1.5, 'USD', '', '', '',"
                " false, '\\x00'::bytea FROM pre",
                (host, model, license, licensor),
            )
        conn.execute("DROP TABLE pre")
    conn.execute("VACUUM ANALYZE usage_record")
    conn.execute("VACUUM ANALYZE usage_key")
    conn.execute("VACUUM ANALYZE bench_plain")
    conn.execute("CHECKPOINT")
    return time.perf_counter() - t0


def level_plain(conn: psycopg.Connection, ids: list[int]) -> None:
    """Untimed: bench_plain gets as many rows as usage_record holds (which also took the
    endpoint's and the other baselines' rows), so the reference copies into a table as full."""
    host, model, license, licensor = ids
    count = "SELECT (SELECT count(*) FROM usage_record) - (SELECT count(*) FROM bench_plain)"
    missing = conn.execute(count).fetchone()[0]  # type: ignore[index]
    if missing > 0:
        conn.execute(
            f"INSERT INTO bench_plain ({RECORD_COLUMNS}) SELECT %s, gen_random_uuid()::text, %s,"
            " %s, %s, now(), now(), 'commercial', 1000, 0, 200, 1, 1.5, 'USD', '', '', '', false,"
            " '\\x00'::bytea FROM generate_series(1, %s)",
            (host, model, license, licensor, missing),
        )


def warm(conn: psycopg.Connection) -> None:
    """Untimed, at the start of every round: every table and index the phases write (the
    partitions, the claims, the plain table) read into the OS page cache (pg_prewarm, 'read').
    This machine's kernel reclaims idle page cache on its own (DAMON): after the preload, the
    claims' unique index had left memory, and the round's first phase, whichever it was, paid
    for reading it back at random (10,000-record batches at 12 s instead of 1). Every subject
    of a round now starts from the same warm cache."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    relations = conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
        " AND (c.relname LIKE 'usage_record%' OR c.relname LIKE 'usage_key%'"
        " OR c.relname LIKE 'bench_plain%')"
    ).fetchall()
    for (relation,) in relations:
        conn.execute("SELECT pg_prewarm(%s, 'read')", (relation,))


def encode_rows(ids: list[int], n: int) -> tuple[list[bytes], list[bytes]]:
    """n records of this month as lines of COPY text, for usage_record (and bench_plain), and
    their claims for usage_key. Built before any clock starts."""
    host, model, license, licensor = ids
    at = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    records: list[bytes] = []
    keys: list[bytes] = []
    for _ in range(n):
        event_id = str(uuid.uuid4())
        digest = os.urandom(16).hex()
        # bytea in COPY text: "\\x<hex>" (the backslash of \x escaped for COPY).
        records.append(
            f"{host}\t{event_id}\t{model}\t{license}\t{licensor}\t{at}\t{at}\tcommercial\t"
            f"1000\t0\t200\t1\t1.5\tUSD\t\t\t\tf\t\\\\x{digest}\n".encode()
        )
        keys.append(f"{host}\t{event_id}\t\\\\x{digest}\t{at}\n".encode())
    return records, keys


def raw_copy(
    conns: list[psycopg.Connection], ids: list[int], n: int, *, into: str
) -> tuple[float, float]:
    """rows/s of a plain COPY of n records of this month, and PostgreSQL's CPU µs per row, split
    over `conns` (as many as the endpoint's workers), each connection copying its share in one
    transaction: `into` is "record" (usage_record), "key+record" (usage_key, then usage_record)
    or "plain" (bench_plain). The COPY text is encoded before the clock starts; CHECKPOINT right
    before."""
    records, keys = encode_rows(ids, n)
    k = len(conns)
    statements = {
        "record": [f"COPY usage_record ({RECORD_COLUMNS}) FROM STDIN"],
        "key+record": [
            "COPY usage_key (host_id, event_id, content_hash, occurred_at) FROM STDIN",
            f"COPY usage_record ({RECORD_COLUMNS}) FROM STDIN",
        ],
        "plain": [f"COPY bench_plain ({RECORD_COLUMNS}) FROM STDIN"],
    }[into]
    shares = [
        [
            b"".join(keys[i::k]) if "usage_key" in sql else b"".join(records[i::k])
            for sql in statements
        ]
        for i in range(k)
    ]
    barrier = threading.Barrier(k + 1)
    errors: list[BaseException] = []

    def copy_share(conn: psycopg.Connection, share: list[bytes]) -> None:
        try:
            barrier.wait()
            with conn.transaction():
                for sql, data in zip(statements, share, strict=True):
                    with conn.cursor().copy(sql) as copy:
                        for offset in range(0, len(data), 1 << 20):
                            copy.write(data[offset : offset + (1 << 20)])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=copy_share, args=(conn, share))
        for conn, share in zip(conns, shares, strict=True)
    ]
    for t in threads:
        t.start()
    checkpoint(conns[0])
    pg0 = postgres_cpu()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    pg = postgres_cpu() - pg0
    if errors:
        raise errors[0]
    return n / elapsed, 1e6 * pg / n


def spread(values: list[float], fmt: str = ",.0f") -> str:
    """`median (min-max)`."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def measure_state(
    conn: psycopg.Connection,
    ids: list[int],
    key: str,
    state: int,
    *,
    workers: int,
    clients: int,
    duration: float,
    repeats: int,
    events: bool = True,
) -> None:
    """`repeats` rounds of: the endpoint phase of POST /api/v1/usage and (with `events`) that of
    POST /api/v1/events with the same records, in alternating order, then COPY into
    usage_record alone, into usage_key + usage_record, and into bench_plain, each of as many
    records as /api/v1/usage stored in that round, on `workers` connections, each phase after a
    CHECKPOINT. Rounds interleave, so noise and table growth fall on all of them."""
    held = conn.execute("SELECT count(*) FROM usage_key").fetchone()[0]  # type: ignore[index]
    print(f"\n== tables holding {held:,} records ==", flush=True)
    rounds: list[dict[str, Any]] = []
    copiers = [psycopg.connect(DB_URL, autocommit=True) for _ in range(workers)]
    server, url = serve(workers, _env())
    try:
        for r in range(repeats):
            # This server runs with autovacuum off: without it, usage_key would keep the stats of
            # an empty table while it grows by millions, and the endpoint's duplicate lookup
            # (`event_id = ANY(...)`) would turn into a scan of it. Analyze as autovacuum would.
            level_plain(conn, ids)
            conn.execute("ANALYZE usage_key, usage_record, bench_plain")
            warm(conn)
            load = os.getloadavg()[0]
            run = f"s{state}r{r}{uuid.uuid4().hex[:6]}"
            order = ["usage", "events"] if events else ["usage"]
            if r % 2:
                order.reverse()
            phases = {
                name: http_run(
                    conn, url, key, f"{run}{name[0]}", clients, duration, name, server.pid
                )
                for name in order
            }
            endpoint = phases["usage"]
            n = endpoint["stored"]
            measured = {into: raw_copy(copiers, ids, n, into=into) for into in BASELINES}
            copies = {into: rate for into, (rate, _) in measured.items()}
            pg_copies = {f"pg_{into}": pg for into, (_, pg) in measured.items()}
            rounds.append({**endpoint, **copies, **pg_copies, "events": phases.get("events")})
            stored = endpoint["stored_per_s"]
            line = (
                f"round {r + 1}: load {load:.1f}; POST /usage {stored:,.0f} stored rec/s"
                f" ({endpoint['records_per_s']:,.0f} with resends; {n:,} stored, p50"
                f" {endpoint['p50_ms']:.0f} ms, p99 {endpoint['p99_ms']:.0f} ms, worker CPU"
                f" {endpoint['cpu_us']:.1f} µs/stored, PostgreSQL CPU {endpoint['pg_us']:.1f}"
                " µs/stored)"
            )
            if events:
                ev = phases["events"]
                line += (
                    f"; POST /events {ev['stored_per_s']:,.0f} stored rec/s ({ev['stored']:,}"
                    f" stored, p50 {ev['p50_ms']:.0f} ms, p99 {ev['p99_ms']:.0f} ms, worker CPU"
                    f" {ev['cpu_us']:.1f} µs/stored, PostgreSQL CPU {ev['pg_us']:.1f} µs/stored),"
                    " events / usage"
                    f" {ev['stored_per_s'] / stored:.2f} (order: {', '.join(order)})"
                )
            print(
                line
                + f"; COPY of {n:,} on {workers} connections: "
                + ", ".join(
                    f"{into} {copies[into]:,.0f} rows/s (PostgreSQL CPU"
                    f" {pg_copies['pg_' + into]:.1f} µs/row)"
                    for into in BASELINES
                )
                + "; ratios "
                + " / ".join(f"{stored / copies[into]:.2f}" for into in BASELINES),
                flush=True,
            )
        rss = worker_peak_rss(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        for c in copiers:
            c.close()
    claims = conn.execute("SELECT count(*) FROM usage_key").fetchone()[0]  # type: ignore[index]
    records = conn.execute("SELECT count(*) FROM usage_record").fetchone()[0]  # type: ignore[index]
    plain = conn.execute("SELECT count(*) FROM bench_plain").fetchone()[0]  # type: ignore[index]
    summary = (
        f"-- median (min-max) of {repeats} rounds; at the end usage_record held {records:,}"
        f" records, usage_key {claims:,} claims, bench_plain {plain:,} rows\n"
        + "".join(
            f"raw COPY, {workers} connections, {BASELINES[into]:<31} "
            f"{spread([x[into] for x in rounds])} rows/s\n"
            for into in BASELINES
        )
        + f"POST /api/v1/usage, stored:                         "
        f"{spread([x['stored_per_s'] for x in rounds])} records/s"
        f" (with resends {spread([x['records_per_s'] for x in rounds])})\n"
        f"  per batch: p50 {spread([x['p50_ms'] for x in rounds])} ms,"
        f" p99 {spread([x['p99_ms'] for x in rounds])} ms,"
        f" {sum(x['batches'] for x in rounds)} batches;"
        f" worker CPU {spread([x['cpu_us'] for x in rounds], '.1f')} µs per stored record\n"
        f"  PostgreSQL CPU per stored row: POST /usage"
        f" {spread([x['pg_us'] for x in rounds], '.1f')} µs; "
        + "; ".join(
            f"COPY {into} {spread([x['pg_' + into] for x in rounds], '.1f')} µs"
            for into in BASELINES
        )
        + "\n"
        + "".join(
            f"  ratio stored/s vs COPY into {BASELINES[into]:<31} per round: "
            f"{spread([x['stored_per_s'] / x[into] for x in rounds], '.2f')}\n"
            for into in BASELINES
        )
    )
    if events:
        evs = [x["events"] for x in rounds]
        pairs = zip(evs, rounds, strict=True)
        summary += (
            f"POST /api/v1/events (the same records as CloudEvents), stored:"
            f" {spread([e['stored_per_s'] for e in evs])} records/s"
            f" (with resends {spread([e['records_per_s'] for e in evs])})\n"
            f"  per batch: p50 {spread([e['p50_ms'] for e in evs])} ms,"
            f" p99 {spread([e['p99_ms'] for e in evs])} ms;"
            f" worker CPU {spread([e['cpu_us'] for e in evs], '.1f')} µs per stored record\n"
            f"  ratio stored/s events / usage per round:"
            f" {spread([e['stored_per_s'] / x['stored_per_s'] for e, x in pairs], '.2f')}\n"
        )
    print(summary + f"  peak RSS of a gunicorn worker: {rss / 1024:.0f} MiB", flush=True)


BASELINES = {
    "record": "usage_record alone:",
    "key+record": "usage_key + usage_record:",
    "plain": "one plain table, UNIQUE key:",
}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv

    def option(name: str, default: float) -> float:
        # `--name=value`: bench/__main__.py passes on only the arguments that start with "-".
        for arg in argv:
            if arg.startswith(name + "="):
                return float(arg.split("=", 1)[1])
        return default

    rows = int(option("--rows", 200_000 if quick else 10_000_000))
    duration = option("--duration", 5 if quick else 20)
    repeats = int(option("--repeats", 1 if quick else 3))
    clients = int(option("--clients", 4))
    # Production's default (config/gunicorn.py, GUNICORN_WORKERS): two sync workers per core.
    workers = int(option("--workers", 2 * (os.cpu_count() or 1)))
    events = "--no-events" not in argv

    ids, key = prepare_database()
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    print(
        f"PostgreSQL {version}, psycopg {psycopg.__version__}, {os.cpu_count()} cores;"
        f" gunicorn {workers} sync workers, {clients} httpx client processes on the same machine;"
        f" batches of {BATCH:,} ({DUPLICATES:,} resent); {duration:g}s x {repeats}",
        flush=True,
    )
    try:
        for state in (0, rows) if rows else (0,):  # --rows=0: the empty state only
            with psycopg.connect(DB_URL, autocommit=True) as conn:
                if state:
                    seconds = preload(conn, ids, state)
                    print(f"preloaded {state:,} rows in {seconds:.0f}s", flush=True)
                measure_state(
                    conn,
                    ids,
                    key,
                    state,
                    workers=workers,
                    clients=clients,
                    duration=duration,
                    repeats=repeats,
                    events=events,
                )
    finally:
        scratch_drop(DB)  # tens of millions of rows after a full run: not left on the machine
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
