"""What the claim of a batch's event_ids costs PostgreSQL, against the ways around it:
`python -m bench ingest_claim [--claims=N] [--rounds=R]`.

The claim is the idempotency half of the ingest write (usage/services.py): COPY the batch's
(event_id, content_hash, occurred_at) into the session's stage, then `CLAIM_SQL`, an
`INSERT INTO usage_key ... ON CONFLICT DO NOTHING` in event_id order that answers the ids it did
not claim. Against it, on the same migrated `usage_key` (scratch database
`tollgate_bench_claim`, or $BENCH_CLAIM_DB, holding `--claims` claims, default 750,000):

- "lookup, then COPY": find the batch's stored ids first (one join of the ids, bound as one
  binary array, to usage_key), then COPY the new ones straight into usage_key, in event_id
  order. Idempotent only with a retry on a unique violation (a concurrent batch between the two
  statements), which is not built: this measures its best case;
- "COPY of the new alone": the new ids COPYed into usage_key as if which were new were known
  for free. Not idempotent: the floor of writing the claims at all;
- "the lookup alone": the first half of the second, to see what the probes cost.

Then, for a batch of 10,000 new records (no resend: most hosts' traffic), the ON CONFLICT
claim against the claim the app makes of such a batch: probe PROBE_IDS of its ids (none is
claimed), then COPY the claims straight into usage_key in event_id order.

Each round runs the four in alternating order, each on its own batch of 10,000 records: 9,000
new and 1,000 resent from the last batch stored, as `bench ingest` sends them. Prints per
variant the median (min-max) wall time and PostgreSQL backend CPU time per batch (from
/proc/<pid>/stat of the session's backend; 10 ms ticks, hence many rounds). The figures back
docs/performance.md, "Ingestion" (what the claim costs, and why the endpoint cannot come closer
to the one-table COPY on this storage).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable

import psycopg

from bench import ingest

DB = os.environ.get("BENCH_CLAIM_DB", "tollgate_bench_claim")
DB_URL = ingest.scratch_url(DB)
HOST = 1
AT = "2026-12-03T10:00:00+00:00"
KEY_COLUMNS = "host_id, event_id, content_hash, occurred_at"


def claim_lines(ids: list[str]) -> str:
    """COPY text of claims, in usage_key's (and the stage's) columns."""
    return "".join(f"{HOST}\t{e}\t\\\\x{os.urandom(16).hex()}\t{AT}\n" for e in ids)


def report(
    variants: dict[str, Callable[[list[str]], set[str]]],
    walls: dict[str, list[float]],
    cpus: dict[str, list[float]],
) -> None:
    for name in variants:
        w, c = walls[name], cpus[name]
        print(
            f"  {name:<44} wall {statistics.median(w) * 1000:6.1f} ms"
            f" ({min(w) * 1000:.1f}-{max(w) * 1000:.1f}),"
            f" PostgreSQL CPU {statistics.median(c) * 1000:4.0f} ms"
            f" ({min(c) * 1000:.0f}-{max(c) * 1000:.0f})"
        )


def main(argv: list[str]) -> int:
    claims = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--claims=")), 750_000)
    rounds = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--rounds=")), 12)
    ingest.django_on_scratch(DB)
    from usage.services import CLAIM_SQL, CLAIM_STAGE_SQL, PROBE_IDS, PROBE_SQL

    conn = psycopg.connect(DB_URL, autocommit=True)
    try:
        with conn.cursor().copy(f"COPY usage_key ({KEY_COLUMNS}) FROM STDIN") as copy:
            copy.write(claim_lines([str(uuid.uuid4()) for _ in range(claims)]))
        conn.execute("VACUUM ANALYZE usage_key")
        conn.execute(CLAIM_STAGE_SQL)
        pid = conn.info.backend_pid
        tick = os.sysconf("SC_CLK_TCK")

        def backend_cpu() -> float:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick

        def claim(ids: list[str]) -> set[str]:
            with conn.transaction():
                conn.execute("TRUNCATE usage_claim")
                stage = f"COPY usage_claim ({KEY_COLUMNS}) FROM STDIN"
                with conn.cursor().copy(stage) as copy:
                    copy.write(claim_lines(ids))
                return {row[0] for row in conn.execute(CLAIM_SQL).fetchall()}

        def lookup(ids: list[str]) -> set[str]:
            with psycopg.Cursor(conn) as cursor:  # server-side binding: one binary array
                cursor.execute(
                    "SELECT k.event_id FROM usage_key k JOIN unnest(%b::text[]) AS u(e)"
                    ' ON k.host_id = %b AND k.event_id = u.e COLLATE "C"',
                    [ids, HOST],
                )
                return {row[0] for row in cursor.fetchall()}

        def copy_new(new: list[str]) -> None:
            with conn.cursor().copy(f"COPY usage_key ({KEY_COLUMNS}) FROM STDIN") as copy:
                copy.write(claim_lines(sorted(new)))

        def lookup_then_copy(ids: list[str]) -> set[str]:
            with conn.transaction():
                stored = lookup(ids)
                copy_new([e for e in ids if e not in stored])
                return stored

        def copy_alone(ids: list[str]) -> set[str]:
            with conn.transaction():
                copy_new(ids[:-1000])
            return set(ids[-1000:])

        variants: dict[str, Callable[[list[str]], set[str]]] = {
            "the app's claim (stage + ON CONFLICT)": claim,
            "lookup, then COPY the new": lookup_then_copy,
            "COPY of the new alone (floor)": copy_alone,
            "the lookup alone": lookup,
        }
        stored = [str(uuid.uuid4()) for _ in range(1000)]
        with conn.cursor().copy(f"COPY usage_key ({KEY_COLUMNS}) FROM STDIN") as copy:
            copy.write(claim_lines(stored))
        walls: dict[str, list[float]] = {name: [] for name in variants}
        cpus: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                new = [str(uuid.uuid4()) for _ in range(9000)]
                ids = new + stored[-1000:]
                conn.execute("CHECKPOINT")
                w0, c0 = time.perf_counter(), backend_cpu()
                resent = variants[name](ids)
                walls[name].append(time.perf_counter() - w0)
                cpus[name].append(backend_cpu() - c0)
                if resent != set(stored[-1000:]):
                    raise SystemExit(f"bench ingest_claim: {name} found {len(resent)} resent")
                if name != "the lookup alone":
                    stored = new
        print(
            f"claims of 10,000 records (9,000 new, 1,000 resent) into usage_key holding"
            f" {claims:,}+ claims, {rounds} rounds, median (min-max) per batch:"
        )
        report(variants, walls, cpus)

        # A batch without resends (most hosts' traffic): the app probes PROBE_IDS of its ids,
        # finds none claimed, and COPYs the claims straight into usage_key, sorted.
        def probe_then_copy(ids: list[str]) -> set[str]:
            with conn.transaction():
                probe = ids[:: max(1, len(ids) // PROBE_IDS)]
                if conn.execute(PROBE_SQL.replace("%s", "%b"), [HOST, probe]).fetchone():
                    raise SystemExit("bench ingest_claim: the probe found a new id claimed")
                copy_new(ids)
            return set()

        fresh: dict[str, Callable[[list[str]], set[str]]] = {
            "the ON CONFLICT claim (stage + ON CONFLICT)": claim,
            "the app's claim: probe, then COPY": probe_then_copy,
        }
        walls = {name: [] for name in fresh}
        cpus = {name: [] for name in fresh}
        for r in range(rounds):
            for name in fresh if r % 2 == 0 else reversed(fresh):
                ids = [str(uuid.uuid4()) for _ in range(10_000)]
                conn.execute("CHECKPOINT")
                w0, c0 = time.perf_counter(), backend_cpu()
                if fresh[name](ids):
                    raise SystemExit(f"bench ingest_claim: {name} found a new id claimed")
                walls[name].append(time.perf_counter() - w0)
                cpus[name].append(backend_cpu() - c0)
        print(f"claims of 10,000 new records (no resend), {rounds} rounds, median (min-max):")
        report(fresh, walls, cpus)
    finally:
        conn.close()
        ingest.scratch_drop(DB)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
