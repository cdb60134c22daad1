"""The request id and the request log line (docs/operations.md, "Logs").

Every response carries `X-Request-ID`: the caller's own when it sent a valid one (so a proxy's or
a client's id follows the request through), a new one otherwise. It is bound to the log context
for the whole request, so every line logged while serving it carries it, errors included, and an
error answer's header names the lines an operator should look for. The middleware also counts the
usage endpoints' answers (config/metrics.py), where the figures are final.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import structlog
from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from config.metrics import observe_ingest

HEADER = "X-Request-ID"
# What an incoming id may be: short and safe to echo into headers and logs.
VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

QUIET_PATHS = {"/healthz", "/metrics"}

log = structlog.get_logger("tollgate.request")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if VALID_ID.fullmatch(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        # Django turns an exception of the view into a 500 response below this middleware (and
        # logs it, with the request id, through django.request).
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        response[HEADER] = request_id
        if request.method == "POST":
            observe_ingest(
                path=request.path_info,
                status=response.status_code,
                data=getattr(response, "data", None),
                seconds=seconds,
            )
        # Probes and scrapes come every few seconds: logged only at debug level.
        quiet = request.path_info in QUIET_PATHS and response.status_code < 400
        (log.debug if quiet else log.info)(
            "request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round(seconds * 1000, 1),
        )
        return response


@receiver(request_finished)
def _unbind(**kwargs: object) -> None:
    """The id stays bound until the response is closed, not only until this middleware returns:
    Django logs a 4xx or 5xx answer (django.request) after the middleware chain."""
    structlog.contextvars.clear_contextvars()
