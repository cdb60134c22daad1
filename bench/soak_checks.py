"""The checks at the end of the fault soak (bench/soak.py): what the clients saw acknowledged
against what the database holds, and the settlements against a clean run's over the same
records. Each returns a list of problems (empty: the check holds)."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

FIELDS = ("input_tokens", "output_tokens", "revenue", "corrects")  # compared with what was sent


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stored_records(url: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(host slug, event_id) -> the usage_record rows stored under it."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "SELECT h.slug, r.event_id, r.input_tokens, r.output_tokens, r.revenue, r.corrects,"
            " r.late FROM usage_record r JOIN licensing_host h ON h.id = r.host_id"
        )
        for slug, event_id, input_tokens, output_tokens, revenue, corrects, late in cursor:
            rows.setdefault((slug, event_id), []).append(
                {
                    "input_tokens": int(input_tokens),
                    "output_tokens": int(output_tokens),
                    "revenue": str(Decimal(revenue).quantize(Decimal("0.000001"))),
                    "corrects": corrects,
                    "late": late,
                }
            )
    return rows


def check_keys(url: str) -> tuple[int, list[str]]:
    """usage_key and usage_record agree one to one: a record is stored whole (its claim and its
    row) or not at all. Returns (rows checked, problems)."""
    problems: list[str] = []
    with psycopg.connect(url) as conn:
        keys = conn.execute("SELECT count(*) FROM usage_key").fetchone()
        records = conn.execute("SELECT count(*) FROM usage_record").fetchone()
        orphans = conn.execute(
            "SELECT count(*) FROM usage_key k WHERE NOT EXISTS (SELECT 1 FROM usage_record r"
            " WHERE r.host_id = k.host_id AND r.event_id = k.event_id)"
        ).fetchone()
        unclaimed = conn.execute(
            "SELECT count(*) FROM usage_record r WHERE NOT EXISTS (SELECT 1 FROM usage_key k"
            " WHERE k.host_id = r.host_id AND k.event_id = r.event_id)"
        ).fetchone()
        doubled = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM usage_record GROUP BY host_id, event_id"
            " HAVING count(*) > 1) d"
        ).fetchone()
    assert keys and records and orphans and unclaimed and doubled
    if keys[0] != records[0]:
        problems.append(f"usage_key holds {keys[0]} claims, usage_record {records[0]} rows")
    if orphans[0]:
        problems.append(f"{orphans[0]} claim(s) in usage_key without their usage_record row")
    if unclaimed[0]:
        problems.append(f"{unclaimed[0]} usage_record row(s) without their claim")
    if doubled[0]:
        problems.append(f"{doubled[0]} event id(s) stored more than once in usage_record")
    return int(records[0]), problems


def check_acknowledged(
    url: str, out: Path, hosts: dict[int, str]
) -> tuple[dict[str, int], list[str]]:
    """Every record a client saw acknowledged (accepted or duplicate) is stored exactly once, as
    sent; every batch's fresh records are stored all or none (a batch is one transaction), and
    none was stored that no client sent."""
    stored = stored_records(url)
    problems: list[str] = []
    acked = _jsonl(out / "acked.jsonl")
    seen: set[tuple[str, str]] = set()
    for row in acked:
        key = (hosts[row["host"]], row["event_id"])
        seen.add(key)
        found = stored.get(key, [])
        if len(found) != 1:
            problems.append(f"acknowledged {key} is stored {len(found)} times")
            continue
        want = {k: row[k] for k in FIELDS}
        got = {k: found[0][k] for k in want}
        if got != want:
            problems.append(f"acknowledged {key} is stored as {got}, was sent as {want}")
    sent_keys: set[tuple[str, str]] = set()
    partial = 0
    unacked_stored = unacked_absent = 0
    for batch in _jsonl(out / "sent.jsonl"):
        keys = [(hosts[batch["host"]], r["event_id"]) for r in batch["records"]]
        sent_keys.update(keys)
        for key, sent in zip(keys, batch["records"], strict=True):
            # Whole: every stored record, acknowledged or not, holds what was sent.
            if key in stored and any(
                {k: row[k] for k in FIELDS} != {k: sent[k] for k in FIELDS} for row in stored[key]
            ):
                problems.append(f"stored {key} differs from what was sent: {sent}")
        present = sum(1 for k in keys if k in stored)
        if present not in (0, len(keys)):
            partial += 1
            problems.append(
                f"batch {batch['batch']} of host {batch['host']}: {present} of "
                f"{len(keys)} fresh records stored"
            )
        if not any(k in seen for k in keys):
            unacked_stored += present == len(keys) and bool(keys)
            unacked_absent += present == 0
    strangers = [k for k in stored if k not in sent_keys]
    if strangers:
        problems.append(f"{len(strangers)} stored record(s) no client sent, e.g. {strangers[:3]}")
    late = sum(1 for rows in stored.values() for r in rows if r["late"])
    if late:
        problems.append(f"{late} record(s) stored late: the month was closed under the clients")
    figures = {
        "acknowledged": len(acked),
        "acknowledged_distinct": len(seen),
        "stored": sum(len(v) for v in stored.values()),
        "unacknowledged_batches_stored_whole": unacked_stored,
        "unacknowledged_batches_not_stored": unacked_absent,
        "partial_batches": partial,
    }
    return figures, problems


SETTLEMENTS_SQL = """
SELECT lr.slug, h.slug, s.period, s.currency, s.status, s.total::text, s.record_count,
       s.usage_digest, s.terms_digest, s.flags::text,
       (SELECT coalesce(jsonb_agg(to_jsonb(l) - 'id' - 'settlement_id' - 'license_id'
                                  || jsonb_build_object('license', lc.slug)
                                  ORDER BY l.position), '[]'::jsonb)::text
          FROM billing_settlementline l JOIN licensing_license lc ON lc.id = l.license_id
         WHERE l.settlement_id = s.id)
  FROM billing_settlement s
  JOIN licensing_licensor lr ON lr.id = s.licensor_id
  JOIN licensing_host h ON h.id = s.host_id
 WHERE s.period = %s AND s.status NOT IN ('superseded', 'void')
 ORDER BY 1, 2, 4
"""


def settlements(url: str, period: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return list(conn.execute(SETTLEMENTS_SQL, (period,)).fetchall())


def check_settlements(soak_url: str, clean_url: str, period: str) -> tuple[int, list[str]]:
    """The soak's current settlements of the period equal the clean run's, line for line."""
    ours, clean = settlements(soak_url, period), settlements(clean_url, period)
    problems: list[str] = []
    if not clean:
        problems.append("the clean run wrote no settlement")
    if ours != clean:
        a, b = Counter(ours), Counter(clean)
        for row in (a - b).elements():
            problems.append(f"only in the soak: {row[:7]}")
        for row in (b - a).elements():
            problems.append(f"only in the clean run: {row[:7]}")
    return len(ours), problems


def copy_usage(source_url: str, target_url: str) -> int:
    """Copy the stored usage (claims and records, every column) into the clean database."""
    copied = 0
    with psycopg.connect(source_url) as src, psycopg.connect(target_url) as dst:
        for table in ("usage_key", "usage_record"):
            columns = [
                r[0]
                for r in src.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                    " ORDER BY ordinal_position",
                    (table,),
                )
            ]
            names = ", ".join(columns)
            with (
                src.cursor().copy(f"COPY (SELECT {names} FROM {table}) TO STDOUT") as out,
                dst.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as into,
            ):
                for chunk in out:
                    into.write(chunk)
            copied += int(dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
        dst.commit()
    return copied


def same_catalog(soak_url: str, clean_url: str) -> list[str]:
    """The clean database's licensing ids are the soak's (the records are copied with ids)."""
    query = (
        "SELECT 'host', id, slug FROM licensing_host UNION ALL"
        " SELECT 'licensor', id, slug FROM licensing_licensor UNION ALL"
        " SELECT 'license', id, slug FROM licensing_license UNION ALL"
        " SELECT 'model', id, slug FROM licensing_model ORDER BY 1, 2"
    )
    with psycopg.connect(soak_url) as a, psycopg.connect(clean_url) as b:
        if list(a.execute(query)) != list(b.execute(query)):
            return ["the clean database's catalog ids differ from the soak's"]
    return []


def stuck_run_report(url: str, redis_url: str, worker_log: Path) -> list[str]:
    """Why a billing run did not end: the period's last runs, what PostgreSQL's backends are
    doing or waiting for, what the broker still holds, and the worker log's tail. Printed when
    the soak's last run is lost, so that a failure seen once (in CI, say) says where it stood."""
    lines: list[str] = []
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            lines.append("billing runs (newest first):")
            for row in conn.execute(
                "SELECT id, status, trigger, started_at::time(1)::text,"
                " aggregated_at::time(1)::text, finished_at::time(1)::text, pairs_done,"
                " pairs_total, owner FROM billing_billingrun ORDER BY id DESC LIMIT 6"
            ):
                lines.append(f"  {row}")
            lines.append("backends not idle:")
            for row in conn.execute(
                "SELECT pid, application_name, state, wait_event_type, wait_event,"
                " (now() - xact_start)::text, left(query, 160) FROM pg_stat_activity"
                " WHERE datname = current_database() AND state <> 'idle'"
                " AND pid <> pg_backend_pid()"
            ):
                lines.append(f"  {row}")
            lines.append("locks waited for:")
            for row in conn.execute(
                "SELECT l.pid, l.locktype, l.relation::regclass, l.mode,"
                " pg_blocking_pids(l.pid) FROM pg_locks l WHERE NOT l.granted"
            ):
                lines.append(f"  {row}")
    except psycopg.Error as exc:
        lines.append(f"database: {exc!r}")
    try:
        import redis

        broker = redis.Redis.from_url(redis_url, socket_timeout=5)
        lines.append(
            f"broker: {broker.llen('celery')} message(s) queued, {broker.hlen('unacked')}"
            " delivered and not acknowledged"
        )
    except Exception as exc:  # the report must not hide the failure it describes
        lines.append(f"broker: {exc!r}")
    tail = worker_log.read_text(errors="replace").splitlines()[-40:] if worker_log.exists() else []
    lines.append("worker log, last lines:")
    lines += [f"  {line[:300]}" for line in tail]
    return lines
