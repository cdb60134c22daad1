"""The load side of the ingestion benchmarks (`bench.ingest`, `bench.ingest_rejections`): the
request bodies, the httpx client processes, the gunicorn server, one timed endpoint phase.

The same records go to either endpoint: `POST /api/v1/usage` as `{"records": [...]}`, and
`POST /api/v1/events` as a CloudEvents batch (`application/cloudevents-batch+json`) of the shape
LiteLLM's `openmeter` callback sends (`id`, `time`, `subject`, `source`, `type`, and `data` with
`model`, `cost` as a JSON number, `prompt_tokens`, `completion_tokens`, `total_tokens`), which the
bench host's mapping turns into the very records posted to `/api/v1/usage` (the default mapping,
plus `region` from `data.region` and `default_customer_category` "commercial": LiteLLM sends
neither). Stored rows are compared with stored rows.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BATCH = 10_000
# 10% of each batch is a resend of the previous batch's records: the figures are taken
# so. BENCH_RESENT=0 measures batches without resends (most hosts' traffic), whose claim takes
# the straight COPY (usage/services.py, PROBE_SQL).
DUPLICATES = int(os.environ.get("BENCH_RESENT", "1000"))
# The bench host's event_mapping (merged over the defaults) and default_customer_category.
EVENT_MAPPING = {"region": "data.region"}
DEFAULT_CATEGORY = "commercial"
# endpoint name -> (path, Content-Type, success status)
ENDPOINTS = {
    "usage": ("/api/v1/usage", "application/json", 200),
    "events": ("/api/v1/events", "application/cloudevents-batch+json", 202),
}


def checkpoint(conn: psycopg.Connection) -> None:
    """Start every timed phase from the same WAL position: no checkpoint pending, so full-page
    writes after the next one fall on whichever phase runs, not on whichever ran first."""
    conn.execute("CHECKPOINT")


def record(client: int, run: str, n: int, at: str) -> dict[str, Any]:
    """The n-th record of a client in a run, as `POST /api/v1/usage` takes it."""
    return {
        # Random-looking UUIDs, as in the preload and the COPY baselines (uuid4), so that both
        # write the unique index at random places (docs/performance.md's trap); a resend repeats
        # it.
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run}-c{client}-{n}")),
        "model": "bench-model",
        "occurred_at": at,
        "customer_category": "commercial",
        "input_tokens": 1000 + n % 977,
        "output_tokens": 200,
        "revenue": f"{n % 1000}.125",
        "region": "US",
        "customer_ref": f"customer-{n % 50}",
    }


def as_event(r: dict[str, Any]) -> dict[str, Any]:
    """The same record as LiteLLM's `openmeter` callback would send it (a CloudEvent)."""
    assert r["customer_category"] == DEFAULT_CATEGORY
    return {
        "specversion": "1.0",
        "type": "litellm_tokens",
        "id": r["event_id"],
        "time": r["occurred_at"],
        "subject": r["customer_ref"],
        "source": "litellm-proxy",
        "data": {
            "model": r["model"],
            # A JSON number, as LiteLLM sends it (n.125 is exact in binary, so orjson writes the
            # same digits the string has).
            "cost": float(r["revenue"]),
            "prompt_tokens": r["input_tokens"],
            "completion_tokens": r["output_tokens"],
            "total_tokens": r["input_tokens"] + r["output_tokens"],
            "region": r["region"],
        },
    }


def make_batches(client: int, run: str, count: int, endpoint: str = "usage") -> list[bytes]:
    """`count` + 1 bodies (the first is a warm-up whose records the second resends)."""
    at = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    fresh = BATCH - DUPLICATES
    bodies = []
    for b in range(count + 1):
        records = [record(client, run, b * fresh + i, at) for i in range(fresh)]
        if b:
            records += [record(client, run, (b - 1) * fresh + i, at) for i in range(DUPLICATES)]
        if endpoint == "events":
            bodies.append(orjson.dumps([as_event(r) for r in records]))
        else:
            bodies.append(orjson.dumps({"records": records}))
    return bodies


def client_main(args: tuple[int, str, str, str, str, int, float, Any, Any, Any]) -> None:
    client, url, key, endpoint, run, count, duration, ready, start, out = args
    path, content_type, ok = ENDPOINTS[endpoint]
    bodies = make_batches(client, run, count, endpoint)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
    latencies: list[float] = []
    records = stored = 0
    with httpx.Client(base_url=url, headers=headers, timeout=300) as http:
        http.post(path, content=bodies[0]).raise_for_status()
        ready.put(client)
        start.wait()
        deadline = time.perf_counter() + duration
        for body in bodies[1:]:
            if time.perf_counter() >= deadline:
                break
            t0 = time.perf_counter()
            response = http.post(path, content=body)
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == ok, response.text[:500]
            result = response.json()
            records += result["accepted"] + result["duplicates"] + result["rejected"]
            stored += result["accepted"]
            assert result["rejected"] == 0, result["results"][:3]
            assert result["duplicates"] == DUPLICATES, result["duplicates"]
    out.put((records, stored, latencies))


def _workers(master: int) -> list[dict[str, str]]:
    """/proc/<pid>/status of each gunicorn worker (the children of the master)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(master):
            found.append({**fields, "pid": pid})
    return found


def worker_peak_rss(master: int) -> int:
    """Peak RSS (VmHWM, KiB) of the largest gunicorn worker (children of the master)."""
    return max((int(w["VmHWM"].split()[0]) for w in _workers(master) if "VmHWM" in w), default=0)


def workers_cpu(master: int) -> float:
    """CPU seconds (user + system) the gunicorn workers have used so far: what a phase costs the
    server's Python, whatever else the machine is doing."""
    ticks = 0
    for worker in _workers(master):
        try:
            stat = Path(f"/proc/{worker['pid']}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds (user + system) every `postgres` process on this machine has used so far: the
    backends of the phase's connections, and the WAL writer, checkpointer and background writer
    that its writes keep busy. The bench's server is the machine's only one.

    With the CPU of their exited children (cutime + cstime), which is the postmaster's share: a
    backend that exits (a gunicorn worker's connection is recycled after DB_CONN_MAX_AGE, 60 s,
    so across phases) takes its whole life's CPU out of the live processes' sum, and without it a
    phase read low, once negative (2026-12-03 23:50 UTC)."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                continue
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks += sum(map(int, fields[11:15]))  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def serve(
    workers: int, env: dict[str, str], app: str = "config.wsgi"
) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn serving `app` (a WSGI module) on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [
            str(Path(PYTHON).parent / "gunicorn"),
            app,
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "300",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(url + "/healthz", timeout=2)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("gunicorn did not start")


def http_run(
    conn: psycopg.Connection,
    url: str,
    key: str,
    run: str,
    clients: int,
    duration: float,
    endpoint: str = "usage",
    server: int | None = None,
) -> dict[str, Any]:
    """One timed phase: `clients` processes post to `endpoint` for `duration` seconds, after an
    ANALYZE of the usage tables and a CHECKPOINT (both untimed). Returns records/s (resends
    included), stored records and stored/s, latencies, PostgreSQL's CPU µs per stored record
    (`postgres_cpu`), and (given the gunicorn master's pid, `server`) the workers'."""
    # Enough batches for 40k records/s per client (measured: up to ~23k); one that runs out
    # stops early.
    count = max(3, int(duration * 4))
    ctx = mp.get_context("fork")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=client_main,
            args=((c, url, key, endpoint, run, count, duration, ready, start, out),),
        )
        for c in range(clients)
    ]
    for p in procs:
        p.start()
    # The clock starts once every client has built its bodies and sent its warm-up (a fixed
    # sleep was too short on a loaded machine: the build then fell inside the timed phase).
    for _ in procs:
        ready.get(timeout=600)
    # Autovacuum is off on this server: without fresh statistics, the phase after one that added
    # ~300k rows to a nearly empty usage_key planned its duplicate lookup for an empty table
    # (events after usage measured 0.59-0.72 of it in round 1, 1.05-1.33 the other way round).
    conn.execute("ANALYZE usage_key, usage_record")
    checkpoint(conn)
    cpu0 = workers_cpu(server) if server else 0.0
    pg0 = postgres_cpu()
    t0 = time.perf_counter()
    start.set()
    results = [out.get(timeout=duration + 600) for _ in procs]
    elapsed = time.perf_counter() - t0
    cpu = workers_cpu(server) - cpu0 if server else float("nan")
    pg = postgres_cpu() - pg0
    for p in procs:
        p.join()
    latencies = sorted(x for r in results for x in r[2])
    return {
        "records_per_s": sum(r[0] for r in results) / elapsed,
        "stored": sum(r[1] for r in results),
        "stored_per_s": sum(r[1] for r in results) / elapsed,
        "batches": len(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "cpu_us": 1e6 * cpu / max(1, sum(r[1] for r in results)),
        "pg_us": 1e6 * pg / max(1, sum(r[1] for r in results)),
    }
