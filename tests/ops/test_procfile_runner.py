"""The Procfile runner's stop: when one process ends, the others are stopped; a process that
ignores SIGTERM is killed with everything it forked; nothing outlives the runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def start(procfile: str, tmp_path: Path, stop_timeout: str = "5") -> subprocess.Popen[bytes]:
    (tmp_path / "Procfile").write_text(procfile)
    env = {
        **os.environ,
        "PROCFILE": str(tmp_path / "Procfile"),
        "PROCFILE_STOP_TIMEOUT": stop_timeout,
    }
    # Unset, so the runner makes its own (prometheus_client takes even an empty value as set).
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "config.procfile"],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "runner.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def descendants(proc: subprocess.Popen[bytes], count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = psutil.Process(proc.pid).children(recursive=True)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    pytest.fail(f"expected {count} processes under the runner, found {len(found)}")


def runner_metrics_dir(tmp_path: Path) -> str:
    """The metrics directory the runner made, from the environment it gave its processes."""
    dumped = (tmp_path / "env.txt").read_text()
    return next(line.split("=", 1)[1] for line in dumped.splitlines() if line.startswith("PROM"))


def in_group(pgid: int) -> list[int]:
    pids = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return pids


def test_when_one_process_ends_the_others_are_stopped(tmp_path: Path) -> None:
    runner = start("steady: sleep 60\nshort: sh -c 'sleep 1; exit 3'\n", tmp_path)
    try:
        steady = descendants(runner, 2)

        code = runner.wait(timeout=30)

        assert code == 1
        _, alive = psutil.wait_procs(steady, timeout=5)
        assert alive == []
        assert in_group(runner.pid) == []
        log = (tmp_path / "runner.log").read_text()
        assert "short exited with 3: stopping the others" in log
    finally:
        try:
            os.killpg(runner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_process_that_ignores_sigterm_is_killed_with_its_children(tmp_path: Path) -> None:
    # given: a process that ignores SIGTERM and has a child of its own
    stubborn = "sh -c 'trap \"\" TERM; sleep 120 & wait'"
    env_dump = f"sh -c 'env > {tmp_path / 'env.txt'}; exec sleep 60'"
    runner = start(
        f"polite: {env_dump}\nstubborn: {stubborn}\n", tmp_path, stop_timeout="2"
    )
    try:
        processes = descendants(runner, 3)

        # when
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=30)

        # then: nothing it started is left, the stubborn one's child included, nor its
        # metrics directory
        _, alive = psutil.wait_procs(processes, timeout=5)
        assert alive == []
        assert in_group(runner.pid) == []
        metrics_dir = runner_metrics_dir(tmp_path)
        assert not Path(metrics_dir).exists()
    finally:
        try:
            os.killpg(runner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
