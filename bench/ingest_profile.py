"""Where a worker's time goes per batch:
`python -m bench.ingest_profile [--batches=N] [--endpoint=usage|events] [--cprofile[=cumulative]]`.

In-process (Django's test client, no gunicorn, no HTTP), against the scratch database
`tollgate_bench_profile` (or $BENCH_PROFILE_DB), with the same bodies as `bench.ingest` (10,000
records: 9,000 fresh and 1,000 resent; `--endpoint=events`: the same records as a CloudEvents
batch). Prints per batch: wall time, this process's CPU time (decode, validation, hashing, COPY
encoding, DRF) and the rest (waiting on PostgreSQL), all per record in µs. With `--cprofile` it
also prints the top functions of one run. The figures go to docs/performance.md ("Ingestion").
"""

from __future__ import annotations

import cProfile
import os
import pstats
import statistics
import sys
import time
import uuid

from bench import ingest, ingest_load

DB = os.environ.get("BENCH_PROFILE_DB", "tollgate_bench_profile")  # another name when shared
DB_URL = ingest.scratch_url(DB)


def main(argv: list[str]) -> int:
    batches = 8
    endpoint = "usage"
    for arg in argv:
        if arg.startswith("--batches="):
            batches = int(arg.split("=", 1)[1])
        if arg.startswith("--endpoint="):
            endpoint = arg.split("=", 1)[1]
    path, content_type, ok = ingest_load.ENDPOINTS[endpoint]
    ingest.django_on_scratch(DB)
    from contextlib import redirect_stdout
    from io import StringIO

    buffer = StringIO()
    with redirect_stdout(buffer):
        exec(ingest.SETUP, {})  # noqa: S102 - our own constant
    key = buffer.getvalue().strip().splitlines()[-1]

    from django.test import Client

    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    bodies = ingest_load.make_batches(0, uuid.uuid4().hex[:8], batches, endpoint)

    def post(body: bytes) -> None:
        response = client.post(path, data=body, content_type=content_type)
        assert response.status_code == ok, response.content[:500]
        result = response.json()
        assert result["rejected"] == 0, result["results"][:3]

    post(bodies[0])  # warm-up: connection, catalog, partitions
    walls, cpus = [], []
    sort = next((a.split("=", 1)[1] for a in argv if a.startswith("--cprofile=")), "tottime")
    profiler = cProfile.Profile() if any(a.startswith("--cprofile") for a in argv) else None
    for body in bodies[1:]:
        if profiler:
            profiler.enable()
        w0, c0 = time.perf_counter(), time.process_time()
        post(body)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if profiler:
            profiler.disable()
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    per = 1e6 / ingest.BATCH
    print(
        f"{len(walls)} batches of {ingest.BATCH:,}: wall {wall * 1000:.0f} ms"
        f" ({wall * per:.1f} µs/record), worker CPU {cpu * 1000:.0f} ms"
        f" ({cpu * per:.1f} µs/record), waiting on PostgreSQL {(wall - cpu) * 1000:.0f} ms"
        f" ({(wall - cpu) * per:.1f} µs/record)"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats(sort).print_stats(40)
    from django.db import connection

    connection.close()
    ingest.scratch_drop(DB)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
