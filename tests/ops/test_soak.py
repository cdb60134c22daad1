"""The fault soak's short version (`make soak` runs it for 10 minutes, docs/reliability.md): the
real app under gunicorn, a Celery prefork worker, a Redis and a PostgreSQL cluster of the soak's
own, every kind of fault injected at least once while clients post and billing runs; then the
soak's own checks (acknowledged records stored exactly once, no half-stored batch, the ledger
and the settlements verified, equal to a clean run's). It exits 1 on any problem."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import FAULTS
from bench.soak_procs import pg_bin_dir
from tests.conftest import skip_or_fail

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_nothing_is_lost_or_doubled_while_everything_fails() -> None:
    # given: the binaries the soak starts its own servers from
    if shutil.which("redis-server") is None or not (pg_bin_dir() / "initdb").exists():
        skip_or_fail("the soak needs redis-server and PostgreSQL's initdb")

    # when: 15 seconds of faults, one every 2 seconds, in turn (and until each kind was injected)
    soak = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.soak",
            "--duration",
            "15",
            "--fault-every",
            "2",
            # Each task received and ended in the worker log, whose tail the soak prints when
            # its last run does not end.
            "--worker-log-level",
            "INFO",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = soak.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        soak.terminate()  # SIGTERM: the soak stops what it started (a SIGKILL would leave them)
        stdout, stderr = soak.communicate(timeout=120)
        pytest.fail(f"the soak ran over 10 minutes: {(stdout + stderr)[-6000:]}")
    done = subprocess.CompletedProcess(soak.args, soak.returncode, stdout, stderr)

    # then: every kind of fault was injected, and every check held
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    injected = re.search(r"^faults injected: (.*) \(total", done.stdout, re.MULTILINE)
    assert injected is not None, out[-6000:]
    counts = dict(item.rsplit(" ", 1) for item in injected.group(1).split(", "))
    assert set(counts) == set(FAULTS)
    assert all(int(n) >= 1 for n in counts.values()), injected.group(0)
    assert "OK: nothing lost, nothing doubled" in done.stdout
    stored = r"checked: [1-9]\d* acknowledged records each stored exactly once"
    assert re.search(stored, done.stdout)
    assert re.search(r"checked: [1-9]\d* settlements .* equal line for line", done.stdout)
