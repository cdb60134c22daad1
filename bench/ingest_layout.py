"""The experiment behind the usage table's layout (docs/ingestion.md, "Storage"):

    python -m bench.ingest_layout [--rows N]

Two layouts, each measured empty and holding N rows (default 10M) spread over 12 months, with
random UUID event ids (the trap docs/performance.md describes):

- `flat`: one table, UNIQUE (host_id, event_id), key (host_id, occurred_at, id), and the index that
  serves the month's query best: on occurred_at, covering every column the billing aggregation
  groups by or sums (an index-only scan of the month instead of a scan of every month);
- `part`: a table range-partitioned by month of occurred_at with key (host_id, occurred_at, id)
  per partition, plus an unpartitioned claim table keyed (host_id, event_id), byte-wise
  (`COLLATE "C"`), written in the same transaction.

For each: batches of 10,000 fresh records through the app's ingest SQL shape, and the month's
billing
GROUP BY (the run's keys and sums), after a CHECKPOINT and a warm-up, with the scans its plan
chose. The ingest shapes: `flat` COPYs the batch into a temp stage and inserts it with one
`INSERT ... SELECT ... ON CONFLICT DO NOTHING` (the table's own unique index decides); `part`
does what usage/services.py does: COPY the claim's columns into a temp stage, claim them in
event_id order with `ON CONFLICT DO NOTHING` (answering the unclaimed), then COPY the claimed
records into the partitioned table. Plain psycopg, no Django: this measures the database,
not the app.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

ADMIN_URL = os.environ.get("BENCH_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# Another name when several benches share a server.
DB = os.environ.get("BENCH_LAYOUT_DB", "tollgate_bench_layout")
MONTHS = [(2025, m) for m in range(1, 13)]

COLUMNS = """
    host_id bigint NOT NULL, event_id varchar(128) NOT NULL, model_id bigint NOT NULL,
    license_id bigint NOT NULL, licensor_id bigint NOT NULL, occurred_at timestamptz NOT NULL,
    customer_category varchar(16) NOT NULL, input_tokens bigint NOT NULL,
    cached_input_tokens bigint NOT NULL, output_tokens bigint NOT NULL, requests bigint NOT NULL,
    revenue numeric(20, 6) NOT NULL, currency varchar(3) NOT NULL, content_hash bytea NOT NULL
"""
NAMES = (
    "host_id, event_id, model_id, license_id, licensor_id, occurred_at, customer_category, "
    "input_tokens, cached_input_tokens, output_tokens, requests, revenue, currency, content_hash"
)


def url(db: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + db


def setup(conn: psycopg.Connection, layout: str) -> None:
    conn.execute("DROP TABLE IF EXISTS rec, rec_key CASCADE")
    if layout == "flat":
        conn.execute(f"CREATE TABLE rec (id bigserial, {COLUMNS})")
    else:
        conn.execute(f"CREATE TABLE rec (id bigserial, {COLUMNS}) PARTITION BY RANGE (occurred_at)")
        for y, m in [*MONTHS, (2026, 1)]:
            start = datetime(y, m, 1, tzinfo=UTC)
            end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
            conn.execute(
                f"CREATE TABLE rec_{y}_{m:02d} PARTITION OF rec"
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        conn.execute(
            "CREATE TABLE rec_key (host_id bigint NOT NULL,"
            ' event_id varchar(128) COLLATE "C" NOT NULL,'
            " content_hash bytea NOT NULL, occurred_at timestamptz NOT NULL,"
            " PRIMARY KEY (host_id, event_id))"
        )


def preload(conn: psycopg.Connection, layout: str, rows: int) -> None:
    """N rows over 12 months, 50 hosts, 20 models; indexes built after the load (fast)."""
    if rows:
        conn.execute(
            f"INSERT INTO rec ({NAMES}) SELECT g %% 50, gen_random_uuid()::text, g %% 20, g %% 20,"
            " g %% 5, timestamptz '2025-01-01' + (random() * 31000000) * interval '1 second',"
            " CASE WHEN g %% 2 = 0 THEN 'commercial' ELSE 'individual' END, 1000, 0, 500, 1,"
            " 0.012345, 'USD', '\\x00'::bytea FROM generate_series(1, %s) g",
            (rows,),
        )
        if layout == "part":
            conn.execute(
                "INSERT INTO rec_key SELECT host_id, event_id, content_hash, occurred_at FROM rec"
            )
    if layout == "flat":
        conn.execute("ALTER TABLE rec ADD CONSTRAINT rec_uniq UNIQUE (host_id, event_id)")
        # The month query's best index on one table: a range of occurred_at, read index-only
        # (every column billing groups by or sums, as the real aggregation needs them).
        conn.execute(
            "CREATE INDEX rec_month ON rec (occurred_at) INCLUDE (host_id, licensor_id,"
            " license_id, model_id, customer_category, currency, input_tokens,"
            " cached_input_tokens, output_tokens, requests, revenue)"
        )
    # The records' key as usage_record's (migration usage 0007), in both layouts: by host and
    # time, the order a host's records are read in; it holds the partition key.
    conn.execute("ALTER TABLE rec ADD PRIMARY KEY (host_id, occurred_at, id)")
    conn.execute("VACUUM ANALYZE rec")
    if layout == "part":
        conn.execute("VACUUM ANALYZE rec_key")


def batch_rows(n: int) -> list[tuple[object, ...]]:
    base = datetime(2025, 12, 1, tzinfo=UTC)
    return [
        (
            i % 50,
            str(uuid.uuid4()),
            i % 20,
            i % 20,
            i % 5,
            base + timedelta(seconds=i),
            "commercial",
            1000,
            0,
            500,
            1,
            "0.012345",
            "USD",
            os.urandom(16),
        )
        for i in range(n)
    ]


def ingest(conn: psycopg.Connection, layout: str, rows: list[tuple[object, ...]]) -> float:
    t0 = time.perf_counter()
    with conn.transaction():
        if layout == "flat":
            conn.execute(f"CREATE TEMP TABLE stage ({COLUMNS}) ON COMMIT DROP")
            with conn.cursor().copy(f"COPY stage ({NAMES}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute(
                f"INSERT INTO rec ({NAMES}) SELECT {NAMES} FROM stage"
                " ON CONFLICT (host_id, event_id) DO NOTHING RETURNING id"
            ).fetchall()
        else:
            conn.execute(
                'CREATE TEMP TABLE claim (host_id bigint, event_id varchar(128) COLLATE "C",'
                " content_hash bytea, occurred_at timestamptz) ON COMMIT DROP"
            )
            with conn.cursor().copy(
                "COPY claim (host_id, event_id, content_hash, occurred_at) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row((row[0], row[1], row[13], row[5]))
            unclaimed = {
                event_id
                for (event_id,) in conn.execute(
                    "WITH claimed AS (INSERT INTO rec_key SELECT host_id, event_id, content_hash,"
                    " occurred_at FROM claim ORDER BY event_id ON CONFLICT DO NOTHING"
                    " RETURNING event_id) SELECT k.event_id FROM claim k"
                    " WHERE NOT EXISTS (SELECT 1 FROM claimed c WHERE c.event_id = k.event_id)"
                )
            }
            with conn.cursor().copy(f"COPY rec ({NAMES}) FROM STDIN") as copy:
                for row in rows:
                    if row[1] not in unclaimed:
                        copy.write_row(row)
    return time.perf_counter() - t0


def raw_copy(conn: psycopg.Connection, rows: list[tuple[object, ...]]) -> float:
    t0 = time.perf_counter()
    with conn.transaction(), conn.cursor().copy(f"COPY rec ({NAMES}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return time.perf_counter() - t0


# The billing run's month aggregation (billing/aggregation.py, without the region and the
# terms' buckets, which this table does not have): its keys and its sums.
MONTH_QUERY = (
    "SELECT host_id, licensor_id, license_id, model_id, customer_category, currency,"
    " sum(input_tokens), sum(cached_input_tokens), sum(output_tokens), sum(requests),"
    " sum(revenue), count(*)"
    " FROM rec WHERE occurred_at >= '2025-06-01' AND occurred_at < '2025-07-01'"
    " GROUP BY 1, 2, 3, 4, 5, 6"
)


def month_query(conn: psycopg.Connection) -> float:
    t0 = time.perf_counter()
    conn.execute(MONTH_QUERY).fetchall()
    return time.perf_counter() - t0


def month_scans(conn: psycopg.Connection) -> str:
    """The scan nodes of the month query's plan, e.g. "Index Only Scan using rec_month on rec"."""
    plan = [row[0] for row in conn.execute("EXPLAIN " + MONTH_QUERY).fetchall()]
    scans = [line.strip(" ->").split("  (")[0] for line in plan if "Scan" in line]
    return "; ".join(dict.fromkeys(scans)) or "?"


def main(argv: list[str]) -> int:
    rows = int(argv[argv.index("--rows") + 1]) if "--rows" in argv else 10_000_000
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB}")
        admin.execute(f"CREATE DATABASE {DB}")
    try:
        with psycopg.connect(url(DB), autocommit=True) as conn:
            for layout in ("flat", "part"):
                for state in (0, rows):
                    setup(conn, layout)
                    t0 = time.perf_counter()
                    preload(conn, layout, state)
                    load = time.perf_counter() - t0
                    conn.execute("CHECKPOINT")
                    lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
                    times = [ingest(conn, layout, batch_rows(10_000)) for _ in range(8)]
                    lsn1 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
                    wal = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (lsn1, lsn0)).fetchone()[0]  # type: ignore[index]
                    copies = [raw_copy(conn, batch_rows(10_000)) for _ in range(4)]
                    # the visibility map an index-only scan needs
                    conn.execute("VACUUM ANALYZE rec")
                    conn.execute("CHECKPOINT")  # the month's reads start from no pending writes
                    month_query(conn)  # warm: both layouts are timed with the month in cache
                    months = [month_query(conn) for _ in range(3)]
                    print(
                        f"{layout:4} rows={state:>10,} load={load:6.1f}s"
                        f" ingest={10_000 / statistics.median(times):8,.0f} rec/s"
                        f" (WAL {wal / 80_000:,.0f} B/rec)"
                        f" raw_copy={10_000 / statistics.median(copies):8,.0f} rows/s"
                        f" month_groupby={statistics.median(months):.2f}s ({month_scans(conn)})",
                        flush=True,
                    )
    finally:
        # ~20M rows left behind otherwise, as the other benches do not leave theirs
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
