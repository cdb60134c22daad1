"""The embedded PostgreSQL: started on demand, reused while it runs, stopped cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys
from config import embedded_db
settings = embedded_db.database_settings()
print(embedded_db.server().get_pid(), settings["HOST"], flush=True)
sys.stdin.read()  # hold the server until the test closes our stdin
"""


def start_holder(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "TOLLGATE_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        cwd=ROOT,
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the holder process printed nothing"
    return proc, int(line.split()[0])


def wait_until(condition, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_it_starts_on_demand_is_reused_and_stops_with_its_last_user(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    # given a first process that needs the database: the server starts
    first, pid = start_holder(data_dir)
    assert psutil.pid_exists(pid)
    assert (data_dir / "pg" / "PG_VERSION").exists()

    # when a second process needs it too, it reuses the running server
    second, second_pid = start_holder(data_dir)
    assert second_pid == pid

    # and when the second lets go, the server keeps running for the first
    second.communicate("", timeout=30)
    assert psutil.pid_exists(pid)

    # then when the last one lets go, the server is stopped cleanly
    first.communicate("", timeout=30)
    assert wait_until(lambda: not psutil.pid_exists(pid))
    assert not (data_dir / "pg" / "postmaster.pid").exists()
