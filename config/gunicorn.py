"""Gunicorn settings of the web process (`gunicorn --config python:config.gunicorn`, used by the
Procfile and the image). Each is an environment variable; docs/operations.md, "Gunicorn", says
why each default is what it is.
"""

from __future__ import annotations

import os

from config.logs import logging_config

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# Sync workers, two per core: a usage batch is CPU in Python (~6 µs a record) and waiting on
# PostgreSQL (~15 µs a record), so two per core keep the core busy (docs/performance.md measures
# ingestion with this default). Put a buffering proxy in front: a sync worker is
# held for the whole upload of a slow client's 10 MB body.
workers = int(os.environ.get("GUNICORN_WORKERS", str(2 * (os.cpu_count() or 1))))
worker_class = "sync"
# Seconds a worker may spend on one request before the master kills and replaces it. A
# 10,000-record batch takes ~0.4-1.6 s (p99 1.6 s at 19-28M rows); the rest is room for lock waits.
# A killed request stored nothing (one transaction), and the client's retry with the same event
# ids is exactly-once.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# Seconds a worker has to finish its request after SIGTERM (a deploy) before it is killed.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Seconds an idle keep-alive connection stays open: a host posting batches back to back reuses it.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Workers are not recycled by default (0): their memory stays flat across batches (peak RSS
# 175-204 MiB per worker, docs/performance.md), and every new worker process leaves its own
# sample files in PROMETHEUS_MULTIPROC_DIR, which /metrics reads at each scrape. Set it (with
# jitter, so they do not all restart at once) if a worker's memory is seen to grow.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "0"))
# The app is loaded in each worker, not in the master: no database connection or Celery
# connection is ever shared across a fork.
preload_app = False
# The request log line comes from config/middleware.py (with the request id), not gunicorn's.
accesslog = None
errorlog = "-"
# No control socket ($HOME/.gunicorn/gunicorn.ctl): nothing here uses it, and two gunicorns of
# one user on one machine would contend for the same path.
control_socket_disable = True
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
logconfig_dict = logging_config(
    level=os.environ.get("LOG_LEVEL", "INFO"), fmt=os.environ.get("LOG_FORMAT", "console")
)
# Proxies whose X-Forwarded-* headers are trusted (comma-separated addresses; gunicorn's default
# is 127.0.0.1).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# The heartbeat files live in memory, not on a container's overlay filesystem, whose stalls
# would make the master kill healthy workers. (gunicorn creates them with mkstemp.)
SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = SHM if os.path.isdir(SHM) else None
