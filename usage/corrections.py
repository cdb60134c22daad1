"""The checks a batch's corrections pass before they are stored (docs/ingestion.md).

A correction must name an original of the same host, repeat its identifying fields, and keep
the net of the original and all its corrections within 0 and the per-record maximum in every
counter and the revenue. Runs inside the batch's one transaction (`usage.services._write`),
under a row lock of the originals' claims.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from licensing.models import Host
from usage import wire
from usage.resolve import Outcome, Resolved
from usage.wire import COUNTERS


def check_corrections(
    cursor: Any, *, host: Host, items: list[Resolved], outcome: Outcome
) -> list[Resolved]:
    """The corrections that may be stored: their original exists, they repeat its identifying
    fields, and the net of the original and all its corrections stays ≥ 0 in every field."""
    # An already stored correction (a resend) is a duplicate or conflict, before any other check.
    cursor.execute(
        "SELECT event_id, content_hash FROM usage_key WHERE host_id = %s AND event_id = ANY(%s)",
        [host.pk, [i.record.event_id for i in items]],
    )
    for event_id, stored_hash in cursor.fetchall():
        item = next(i for i in items if i.record.event_id == event_id)
        same = bytes(stored_hash) == item.content_hash
        outcome[event_id] = ("duplicate" if same else "conflict", None)
    items = [i for i in items if i.record.event_id not in outcome]
    if not items:
        return []

    # Lock the originals' claims, in event_id order (no deadlock between two batches). This is
    # what makes the net check safe: two concurrent corrections of one original, each -10 on a
    # net of 10, would otherwise both read 10 and both pass, leaving -10.
    targets = sorted({i.record.corrects for i in items})
    cursor.execute(
        "SELECT event_id FROM usage_key WHERE host_id = %s AND event_id = ANY(%s)"
        " ORDER BY event_id FOR UPDATE",
        [host.pk, targets],
    )
    cursor.execute(
        "SELECT event_id, corrects, model_id, occurred_at, customer_category, currency, region,"
        " input_tokens, cached_input_tokens, output_tokens, requests, revenue"
        " FROM usage_record WHERE host_id = %s AND (event_id = ANY(%s) OR corrects = ANY(%s))",
        [host.pk, targets, targets],
    )
    originals: dict[str, tuple[Any, ...]] = {}
    net: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0, 0, Decimal(0)])
    for row in cursor.fetchall():
        event_id, corrects = row[0], row[1]
        if not corrects and event_id in targets:
            originals[event_id] = row
        owner = corrects or event_id
        for k in range(5):
            net[owner][k] += row[7 + k]

    accepted: list[Resolved] = []
    for item in sorted(items, key=lambda i: i.record.index):
        r = item.record
        original = originals.get(r.corrects)
        if original is None:
            outcome[r.event_id] = (
                "rejected",
                (
                    "corrects",
                    f"correction_not_found: no original record {r.corrects!r} of this"
                    " host (a correction corrects an original, not another correction)",
                ),
            )
            continue
        mismatch = _first_mismatch(item, original)
        if mismatch:
            outcome[r.event_id] = ("rejected", mismatch)
            continue
        deltas = [r.input_tokens, r.cached_input_tokens, r.output_tokens, r.requests, r.revenue]
        totals = net[r.corrects]
        names = [*COUNTERS, "revenue"]
        # The net stays within what one record may carry: 0 to its maximum (docs/ingestion.md).
        bad = [k for k in range(5) if not 0 <= totals[k] + deltas[k] <= wire.NET_MAXIMA[k]]
        if bad:
            value = totals[bad[0]] + deltas[bad[0]]
            problem = "negative_net" if value < 0 else "invalid"
            above = "" if value < 0 else f", above the per-record maximum {wire.NET_MAXIMA[bad[0]]}"
            message = f"{problem}: {r.corrects} would net {value}{above}"
            outcome[r.event_id] = ("rejected", (names[bad[0]], message))
            continue
        for k in range(5):
            totals[k] += deltas[k]
        accepted.append(item)
    return accepted


def _first_mismatch(item: Resolved, original: tuple[Any, ...]) -> tuple[str, str] | None:
    r = item.record
    pairs: Iterable[tuple[str, Any, Any]] = (
        ("model", item.model_id, original[2]),
        ("occurred_at", r.occurred_at, original[3]),
        ("customer_category", r.customer_category, original[4]),
        ("currency", r.currency, original[5]),
        ("region", r.region, original[6]),
    )
    for name, mine, theirs in pairs:
        if mine != theirs:
            shown = theirs.isoformat() if isinstance(theirs, datetime) else repr(theirs)
            return name, f"correction_mismatch: must equal the corrected record's {name} ({shown})"
    return None
