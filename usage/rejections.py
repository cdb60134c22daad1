"""The rejections log: every record refused by `POST /api/v1/usage` or `POST /api/v1/events`,
kept 30 days with its errors, listed per host by `GET /api/v1/usage/rejections`.

Written after the ingest transaction, and only when something was refused: the accepted path
(a batch with no rejected record) costs one scan of an empty result list, nothing more. The rows
are a log, not usage: the beat task `purge_usage_rejections` deletes those older than 30 days.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from licensing.models import Host
from usage.models import UsageRejection
from usage.selectors import QueryError, _timestamp

KEEP = timedelta(days=30)
_View = TypeVar("_View", bound=Callable[..., Response])
PAGE_SIZE = 100


def _storable(value: Any) -> Any:
    """`value` with every NUL character written out as the text `\\u0000`: PostgreSQL's jsonb
    cannot hold one, and an unknown field's name (an errors key) may contain it."""
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def rejections_record(
    *, host: Host, endpoint: str, results: list[dict[str, Any]], received_at: datetime
) -> int:
    """Log the `rejected` entries of an ingest answer's results (duplicates are successes)."""
    rows = [
        UsageRejection(
            host=host,
            received_at=received_at,
            endpoint=endpoint,
            index=r["index"],
            event_id=r["event_id"] or "",
            errors=_storable(r["errors"]),
        )
        for r in results
        if r["status"] == "rejected"
    ]
    if rows:
        UsageRejection.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


def rejection_record_request(
    *, host: Host, endpoint: str, message: str, fields: dict[str, list[str]], received_at: datetime
) -> None:
    """Log a request refused whole (400, 413, 415): nothing of it was stored."""
    UsageRejection.objects.create(
        host=host,
        received_at=received_at,
        endpoint=endpoint,
        index=None,
        event_id="",
        errors=_storable(fields or {"request": [message]}),
    )


def rejections_purge(*, now: datetime | None = None) -> int:
    """Delete the log rows older than 30 days; returns how many."""
    cutoff = (now or timezone.now()) - KEEP
    deleted, _ = UsageRejection.objects.filter(received_at__lt=cutoff).delete()
    return deleted


@dataclass
class RejectionPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def _decode_cursor(cursor: str) -> int:
    try:
        number = int(base64.urlsafe_b64decode(cursor.encode("ascii")).decode())
        if not 0 < number < 2**63:
            raise ValueError(cursor)
        return number
    except (ValueError, UnicodeError, binascii.Error):
        raise QueryError("cursor", "cursor: not a cursor this API gave out") from None


def rejections_page(
    *,
    host: Host,
    since: str | None = None,
    cursor: str | None = None,
    now: datetime | None = None,
    size: int = PAGE_SIZE,
) -> RejectionPage:
    """One page of the host's rejections of the last 30 days, oldest first (keyset on id, which
    grows with received_at)."""
    for name, value in (("since", since), ("cursor", cursor)):
        if value and "\x00" in value:
            raise QueryError(name, f"{name}: must not contain NUL characters")
    start = (now or timezone.now()) - KEEP
    if since:
        start = max(start, _timestamp(since, "since"))
    rows = UsageRejection.objects.filter(host=host, received_at__gte=start)
    if cursor:
        rows = rows.filter(id__gt=_decode_cursor(cursor))
    found = list(
        rows.order_by("id").values("id", "received_at", "endpoint", "index", "event_id", "errors")[
            : size + 1
        ]
    )
    more = len(found) > size
    found = found[:size]
    out = [
        {
            "received_at": r["received_at"].isoformat().replace("+00:00", "Z"),
            "endpoint": r["endpoint"],
            "event_id": r["event_id"] or None,
            "index": r["index"],
            "errors": r["errors"],
        }
        for r in found
    ]
    next_cursor = base64.urlsafe_b64encode(str(found[-1]["id"]).encode()).decode() if more else None
    return RejectionPage(rows=out, next_cursor=next_cursor)


def rejections_logged(endpoint: str) -> Callable[[_View], _View]:
    """Decorates an ingest view's `post`: logs a request refused whole (400, 413, 415) and the
    rejected records of an answer (`response.data["results"]`, or `response.ingest_results` for
    an answer without a body)."""

    def decorate(post: _View) -> _View:
        @functools.wraps(post)
        def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
            host = request.user.host  # type: ignore[union-attr]
            received_at = timezone.now()
            try:
                response = post(view, request, *args, **kwargs)
            except exceptions.APIException as exc:
                if exc.status_code in (400, 413, 415):
                    rejection_record_request(
                        host=host,
                        endpoint=endpoint,
                        message=getattr(exc, "message", None) or str(exc.detail),
                        fields=getattr(exc, "fields", None) or {},
                        received_at=received_at,
                    )
                raise
            results = getattr(response, "ingest_results", None)
            if results is None and isinstance(response.data, dict):
                results = response.data.get("results")
            if results:
                rejections_record(
                    host=host, endpoint=endpoint, results=results, received_at=received_at
                )
            return response

        return wrapper  # type: ignore[return-value]

    return decorate
