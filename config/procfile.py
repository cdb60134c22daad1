"""`python -m config.procfile [NAME ...]`: run the Procfile's processes (web, worker, beat) on one
machine, the way foreman or honcho would, with nothing to install.

Each line `name: command` runs as `sh -c "exec command"`, so `${VAR:-default}` expands and signals
reach the real process (a line is one command: wrap a compound one in `sh -c '...'`). All run in
this runner's process group, with this environment, this interpreter's bin directory first on
PATH (a virtualenv need not be activated), and a fresh `PROMETHEUS_MULTIPROC_DIR` shared by all
of them (so `/metrics` sums the samples of every process: config/metrics.py). When one process
exits, or on SIGTERM or SIGINT, the others get SIGTERM and `PROCFILE_STOP_TIMEOUT` seconds to
finish what they hold (a request, a task); whatever is left is then killed with the whole
process group. Exit status: 0 after a requested stop, 1 when a process ended on its own.
`PROCFILE` names another process list. docs/operations.md, "Processes".
"""

from __future__ import annotations

import logging.config
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import structlog

from config.logs import logging_config, structlog_configure

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
# Seconds: above gunicorn's graceful_timeout (30), so a request in flight can finish.
STOP_TIMEOUT = float(os.environ.get("PROCFILE_STOP_TIMEOUT", "35"))

log = structlog.get_logger("procfile")


def procfile_parse(path: Path) -> dict[str, str]:
    """The process list: name -> shell command, in file order; comments and blanks skipped."""
    processes: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: expected 'name: command', got {raw!r}")
        processes[match.group(1)] = match.group(2)
    return processes


class Runner:
    def __init__(
        self, processes: dict[str, str], env: dict[str, str], cleanup: Callable[[], None]
    ) -> None:
        self.processes = processes
        self.env = env
        self.cleanup = cleanup  # also run before the runner kills its own group
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stop_requested = False

    def start(self) -> None:
        for name, command in self.processes.items():
            self.children[name] = subprocess.Popen(  # noqa: S603 (the Procfile is ours)
                ["/bin/sh", "-c", f"exec {command}"], cwd=ROOT, env=self.env
            )
            _say(f"started {name} (pid {self.children[name].pid}): {command}")

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def wait(self) -> int:
        """Until a stop is requested or a process exits; then stop them all."""
        ended: str | None = None
        while not self.stop_requested and ended is None:
            ended = next((n for n, p in self.children.items() if p.poll() is not None), None)
            time.sleep(0.2)
        if ended is not None:
            _say(f"{ended} exited with {self.children[ended].returncode}: stopping the others")
        self.stop()
        return 0 if ended is None else 1

    def stop(self) -> None:
        for name, child in self.children.items():
            if child.poll() is None:
                _say(f"stopping {name} (pid {child.pid})")
                child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        left = [n for n, c in self.children.items() if c.poll() is None]
        if left:
            # A process that ignored SIGTERM: kill it and what it forked (gunicorn workers, Celery
            # pool children), which share this group.
            _say(f"still running after {STOP_TIMEOUT:.0f}s: {', '.join(left)}; killing the group")
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.cleanup()
            os.killpg(os.getpgrp(), signal.SIGKILL)


def _say(message: str) -> None:
    log.info(message)


def main(argv: list[str]) -> int:
    # The runner's own lines in the format of its processes' (LOG_FORMAT, config/logs.py).
    logging.config.dictConfig(
        logging_config(
            level=os.environ.get("LOG_LEVEL", "INFO"), fmt=os.environ.get("LOG_FORMAT", "")
        )
    )
    structlog_configure()
    processes = procfile_parse(Path(os.environ.get("PROCFILE", ROOT / "Procfile")))
    wanted = argv or list(processes)
    unknown = [n for n in wanted if n not in processes]
    if unknown:
        _say(f"no such process in the Procfile: {', '.join(unknown)}")
        return 2
    env = dict(os.environ)
    metrics_dir = env.get("PROMETHEUS_MULTIPROC_DIR")
    owned = not metrics_dir
    if not metrics_dir:
        metrics_dir = tempfile.mkdtemp(prefix="tollgate-metrics-")
    else:
        # Samples of an earlier run's processes would be summed with this run's.
        for stale in Path(metrics_dir).glob("*.db"):
            stale.unlink()
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # The commands (gunicorn, celery) of this interpreter's environment, activated or not.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    def cleanup() -> None:
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    runner = Runner({n: processes[n] for n in wanted}, env, cleanup)
    signal.signal(signal.SIGTERM, runner.request_stop)
    signal.signal(signal.SIGINT, runner.request_stop)
    try:
        runner.start()
        return runner.wait()
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
