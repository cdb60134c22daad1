"""Does the rejections log slow the accepted path? `python -m bench ingest_rejections [--quick]
[--duration=S] [--repeats=K] [--clients=C] [--workers=W]`.

Two gunicorn servers over the same scratch database (that of `bench.ingest`, recreated): the app
as shipped ("log on"), and `bench.wsgi_without_rejections_log` ("log off"), the same app with
both ingest views unwrapped from `usage.rejections.rejections_logged`, so nothing of the log runs.
Each round, for POST /api/v1/usage and then POST /api/v1/events, the same clients post the same
kind of all-accepted batches (`bench.ingest_load`: 9,000 fresh records + 1,000 resent, which
are duplicates, successes that the log does not keep) to one server and then the other, in
alternating order from round to round, each phase after an ANALYZE and a CHECKPOINT. Printed:
stored records/s and the workers' CPU µs per stored record of each, the per-round ratios log on
/ log off, and the rows the log holds and PostgreSQL's count of rows ever inserted into it at
the end (both must be 0: an all-accepted batch writes nothing to the log;
tests/usage/test_rejections.py asserts it statement by statement). Record the output in
docs/performance.md, "Ingestion".
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from typing import Any

import psycopg

from bench import ingest
from bench.ingest_load import http_run, serve

BUILDS = {"on": "config.wsgi", "off": "bench.wsgi_without_rejections_log"}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv

    def option(name: str, default: float) -> float:
        for arg in argv:
            if arg.startswith(name + "="):
                return float(arg.split("=", 1)[1])
        return default

    duration = option("--duration", 5 if quick else 15)
    repeats = int(option("--repeats", 2 if quick else 3))
    clients = int(option("--clients", 4))
    workers = int(option("--workers", 2))

    _, key = ingest.prepare_database()
    print(
        f"gunicorn {workers} sync workers per build, {clients} httpx client processes on the same"
        f" machine; all-accepted batches of {ingest.BATCH:,} ({ingest.DUPLICATES:,} resent);"
        f" {duration:g}s x {repeats} per endpoint and build; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    servers = {build: serve(workers, ingest._env(), app) for build, app in BUILDS.items()}
    rounds: list[dict[tuple[str, str], dict[str, Any]]] = []
    try:
        with psycopg.connect(ingest.DB_URL, autocommit=True) as conn:
            for r in range(repeats):
                phases: dict[tuple[str, str], dict[str, Any]] = {}
                for endpoint in ("usage", "events"):
                    order = ["on", "off"] if r % 2 == 0 else ["off", "on"]
                    for build in order:
                        server, url = servers[build]
                        run = f"r{r}{endpoint[0]}{build}{uuid.uuid4().hex[:6]}"
                        phases[(endpoint, build)] = http_run(
                            conn, url, key, run, clients, duration, endpoint, server.pid
                        )
                    on, off = phases[(endpoint, "on")], phases[(endpoint, "off")]
                    print(
                        f"round {r + 1}, POST /api/v1/{endpoint} (order {', '.join(order)}):"
                        f" log on {on['stored_per_s']:,.0f} stored rec/s, worker CPU"
                        f" {on['cpu_us']:.2f} µs/stored; log off {off['stored_per_s']:,.0f}"
                        f" stored rec/s, {off['cpu_us']:.2f} µs/stored; on / off"
                        f" {on['stored_per_s'] / off['stored_per_s']:.2f}",
                        flush=True,
                    )
                rounds.append(phases)
            held = conn.execute("SELECT count(*) FROM usage_rejection").fetchone()[0]  # type: ignore[index]
            inserted = conn.execute(
                "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'usage_rejection'"
            ).fetchone()[0]  # type: ignore[index]
    finally:
        for server, _ in servers.values():
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    print(f"-- median (min-max) of {repeats} rounds")
    for endpoint in ("usage", "events"):
        ons = [p[(endpoint, "on")] for p in rounds]
        offs = [p[(endpoint, "off")] for p in rounds]
        pairs = list(zip(ons, offs, strict=True))
        rates = [a["stored_per_s"] / b["stored_per_s"] for a, b in pairs]
        cpus = [a["cpu_us"] / b["cpu_us"] for a, b in pairs]
        print(
            f"POST /api/v1/{endpoint}: log on {ingest.spread([x['stored_per_s'] for x in ons])}"
            f" stored rec/s, worker CPU {ingest.spread([x['cpu_us'] for x in ons], '.2f')}"
            f" µs/stored; log off {ingest.spread([x['stored_per_s'] for x in offs])} stored"
            f" rec/s, {ingest.spread([x['cpu_us'] for x in offs], '.2f')} µs/stored\n"
            f"  per round, on / off: stored/s {ingest.spread(rates, '.2f')}, worker CPU"
            f" {ingest.spread(cpus, '.2f')}",
            flush=True,
        )
    print(
        f"usage_rejection at the end: {held} rows; rows ever inserted (pg_stat_user_tables):"
        f" {inserted}",
        flush=True,
    )
    return 0 if held == 0 and not inserted else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
