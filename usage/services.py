"""Writes of usage: batch ingestion, corrections, period closes, partitions.

The ingest path (docs/ingestion.md walks through it):

1. validate: an all-valid batch takes the fast path (`usage_batch_ingest_valid`, checks per
   batch over columns); any other batch `wire.validate_record` per record, the reference for
   every answer. Resolve models, licenses and the currency of the terms in force from a
   per-batch catalog snapshot (`usage.resolve.Catalog`: a handful of queries per batch, never
   one per record);
2. create missing month partitions (own short transaction);
3. in ONE transaction: claim the originals' event_ids in one statement (`CLAIM_SQL`: `INSERT
   INTO usage_key ... ON CONFLICT DO NOTHING`, answering the ids it did not claim; on the fast
   path, a batch that holds no resend claims them by one COPY into usage_key instead, `PROBE_SQL`
   and `_claim_valid`), classify those not claimed as duplicate or conflict by content hash, and
   COPY the records of the claimed ones into usage_record, so the claim of an event_id and its
   record commit together; then the same for the corrections, under a row lock of their
   originals (`usage.corrections`).

A failure anywhere before COMMIT leaves nothing; the host's retry is then simply a first send.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import psycopg
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from core.periods import add_months
from licensing.models import Host, Licensor
from usage import closing, partitions
from usage.columns import ValidBatch
from usage.corrections import check_corrections
from usage.models import PeriodClose
from usage.resolve import Catalog, Outcome, Resolved
from usage.wire import Record, Rejection, earliest_accepted, validate_record

DEADLOCK_RETRIES = 3

# The columns of usage_record a batch writes besides host_id and received_at, in
# `Resolved.row()` order.
RECORD_COLUMNS = (
    "event_id, model_id, license_id, licensor_id, occurred_at, customer_category, input_tokens,"
    " cached_input_tokens, output_tokens, requests, revenue, currency, region, customer_ref,"
    " corrects, late, content_hash"
)
# The claim of a batch's event_ids: COPY (host_id, event_id, content_hash, occurred_at) into the
# session's temporary table `usage_claim` (kept for the session: cheaper than a CREATE per batch
# with persistent connections; emptied at each commit, and truncated before use in case an outer
# transaction, a test's, spans two batches), then one statement that inserts the claims and
# answers only the event_ids it did NOT claim (usually none or a few: sending 10,000 accepted ids
# back to Python would cost more than this anti-join). The records of the claimed ids are then
# COPYed into usage_record in the same transaction, from the lines already built: the records
# are neither staged nor sorted.
CLAIM_STAGE_SQL = """
CREATE TEMPORARY TABLE IF NOT EXISTS usage_claim (
    host_id bigint, event_id varchar(128) COLLATE "C", content_hash bytea, occurred_at timestamptz
) ON COMMIT DELETE ROWS
"""
# The claim's columns, in usage_key and in the stage: one COPY line serves both.
CLAIM_COLUMNS = "host_id, event_id, content_hash, occurred_at"
# ORDER BY event_id: two batches that share event_ids take the key locks in the same order, so
# concurrent replays of overlapping batches wait for each other instead of deadlocking. The
# stage's collation is usage_key's ("C"), so that order is also the index's.
CLAIM_SQL = """
WITH claimed AS (
    INSERT INTO usage_key (host_id, event_id, content_hash, occurred_at)
    SELECT host_id, event_id, content_hash, occurred_at FROM usage_claim ORDER BY event_id
    ON CONFLICT (host_id, event_id) DO NOTHING
    RETURNING event_id
)
SELECT k.event_id FROM usage_claim k
WHERE NOT EXISTS (SELECT 1 FROM claimed c WHERE c.event_id = k.event_id)
"""
# The fast path's claim of a batch that holds no resent event_id (most batches) skips the stage
# and ON CONFLICT: one COPY straight into usage_key, in event_id order, under a savepoint. COPY
# writes the keys in bulk, where ON CONFLICT inserts them one by one (docs/performance.md,
# "Ingestion": the claim's cost). It is tried only when none of PROBE_IDS event_ids spread over
# the batch is claimed already (a resend of the whole batch, or of a tenth of it, is all but
# always seen; it takes the ON CONFLICT claim at once). If some event_id is claimed after all (a
# resend the probe missed, or a concurrent batch that committed the same event_id first), the
# COPY fails on the key, the savepoint is rolled back, and the ON CONFLICT claim runs: the
# outcome is the same either way, and only the time differs.
PROBE_IDS = 64
PROBE_SQL = "SELECT 1 FROM usage_key WHERE host_id = %s AND event_id = ANY(%s) LIMIT 1"
# Claims by the way they were made, in this process: "copy" (straight COPY), "copy_refused" (the
# COPY met a claimed event_id; the ON CONFLICT claim followed), "on_conflict" (the probe found a
# resend, or the per-record path). Tests read it; like BATCHES_BY_PATH it is not in any answer.
CLAIMS_BY_PATH: Counter[str] = Counter()


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    late: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    # Which path wrote the batch: "fast" (usage_batch_ingest_valid) or "per_record"; not part of
    # the answer (both answer alike by design), so usage.api counts it in BATCHES_BY_PATH.
    path: str = "per_record"

    def as_response(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "late": self.late,
            "results": sorted(self.results, key=lambda r: r["index"]),
        }


def _reject(index: int, event_id: str | None, name: str, message: str) -> dict[str, Any]:
    return {"index": index, "event_id": event_id, "status": "rejected", "errors": {name: [message]}}


def _duplicate(index: int, event_id: str) -> dict[str, Any]:
    return {"index": index, "event_id": event_id, "status": "duplicate", "errors": {}}


def _conflict(index: int, event_id: str) -> dict[str, Any]:
    return _reject(
        index,
        event_id,
        "event_id",
        "conflict: a record with this event_id and other content is already stored;"
        " the stored record stays as it was",
    )


def usage_batch_ingest(
    *, host: Host, records: list[Any], now: datetime | None = None
) -> IngestResult:
    """Store a batch of raw records for `host`, each exactly once. See the module docstring."""
    now = now or timezone.now()
    result = IngestResult()
    valid: list[Record] = []
    earliest = earliest_accepted()
    for index, raw in enumerate(records):
        checked = validate_record(
            index, raw, now=now, host_currency=host.currency, earliest=earliest
        )
        if isinstance(checked, Rejection):
            result.results.append(checked.as_result())
        else:
            valid.append(checked)

    catalog = Catalog(host=host, names={r.model for r in valid})
    resolved: list[Resolved] = []
    for r in valid:
        model_id = catalog.model_by_name.get(r.model)
        if model_id is None:
            result.results.append(
                _reject(
                    r.index, r.event_id, "model", f"unknown_model: no model or alias {r.model!r}"
                )
            )
            continue
        license_id = catalog.license_by_model[model_id]
        expected = catalog.terms_currency(license_id, r.occurred_at)
        if expected is not None and expected != r.currency:
            result.results.append(
                _reject(
                    r.index,
                    r.event_id,
                    "currency",
                    f"currency_mismatch: {r.currency} differs from {expected}, the currency of"
                    f" the terms in force for {r.model} at {r.occurred_at.isoformat()}",
                )
            )
            continue
        resolved.append(
            Resolved(
                record=r,
                model_id=model_id,
                license_id=license_id,
                licensor_id=catalog.licensor_by_license[license_id],
                content_hash=r.content_hash(model_id),
            )
        )

    # One candidate per event_id (the first); later copies in the same batch follow its fate.
    first: dict[str, Resolved] = {}
    followers: list[Resolved] = []
    for item in resolved:
        if item.record.event_id in first:
            followers.append(item)
        else:
            first[item.record.event_id] = item
    candidates = list(first.values())

    partitions.partitions_ensure(
        {(i.record.occurred_at.year, i.record.occurred_at.month) for i in candidates}
    )

    for attempt in range(DEADLOCK_RETRIES):
        try:
            outcome = _write(host=host, candidates=candidates, now=now)
            break
        except (OperationalError, psycopg.errors.DeadlockDetected) as exc:
            # A deadlock can only involve corrections (the bulk insert takes key locks in
            # event_id order); PostgreSQL aborted our transaction, so retrying is a first send.
            if not _deadlocked(exc) or attempt == DEADLOCK_RETRIES - 1:
                raise

    statuses: dict[str, str] = {}
    for item in candidates:
        event_id = item.record.event_id
        status = outcome.get(event_id, ("accepted", None))
        statuses[event_id] = status[0]
        if status[0] == "accepted":
            result.accepted += 1
            result.late += item.late
        elif status[0] == "duplicate":
            result.results.append(_duplicate(item.record.index, event_id))
        elif status[0] == "conflict":
            result.results.append(_conflict(item.record.index, event_id))
        else:
            name, message = status[1]  # type: ignore[misc]
            result.results.append(_reject(item.record.index, event_id, name, message))
    for item in followers:
        event_id = item.record.event_id
        same = item.content_hash == first[event_id].content_hash
        if same and statuses[event_id] in ("accepted", "duplicate"):
            result.results.append(_duplicate(item.record.index, event_id))
        elif same and statuses[event_id] == "rejected":
            # Same content as a record refused for a reason of its own (a correction's net):
            # the same reason holds.
            name, message = outcome[event_id][1]  # type: ignore[misc]
            result.results.append(_reject(item.record.index, event_id, name, message))
        else:
            result.results.append(_conflict(item.record.index, event_id))
    result.duplicates = sum(1 for r in result.results if r["status"] == "duplicate")
    result.rejected = sum(1 for r in result.results if r["status"] == "rejected")
    return result


def usage_batch_ingest_valid(
    *, host: Host, batch: ValidBatch, now: datetime
) -> IngestResult | None:
    """The fast path of `usage_batch_ingest` for a batch that passed `usage.columns.valid_batch`
    (from either endpoint).

    Does per batch (over columns and distinct values) what the slow path does per record, and
    returns None, having written nothing, as soon as any record would need a per-record answer
    other than accepted/duplicate/conflict (an unknown model, a currency mismatch, two copies of
    an event_id in the batch): the caller then runs the slow path, whose answers are the
    reference. Same transaction, same SQL, same hash; the outcome is the same as the slow path's.
    """
    names = set(batch.model)
    catalog = Catalog(host=host, names=names)
    ids: dict[str, tuple[int, int, int]] = {}
    for name, model_id in catalog.model_by_name.items():
        license_id = catalog.license_by_model[model_id]
        ids[name] = (model_id, license_id, catalog.licensor_by_license[license_id])
    event_ids = batch.event_id
    if len(ids) < len(names) or len(set(event_ids)) < len(event_ids):
        return None
    host_currency = host.currency
    currencies = cast(list[str], batch.currency)
    if None in currencies:
        currencies = [c or host_currency for c in currencies]
    # Currency of the terms in force: one check per (model, currency) when no terms of the
    # batch's licenses take effect within its time span (the usual case), else one per
    # (model, currency, span of steady terms); each key maps to an instant that stands for it.
    start, end = min(batch.occurred_at), max(batch.occurred_at)
    checks: dict[tuple[str, str, int], datetime]
    if all(catalog.terms_steady(ids[name][1], start, end) for name in names):
        pairs = set(zip(batch.model, currencies, strict=True))
        checks = {(model, currency, 0): start for model, currency in pairs}
    else:
        checks = {
            (model, currency, catalog.terms_span(ids[model][1], at)): at
            for model, currency, at in zip(batch.model, currencies, batch.occurred_at, strict=True)
        }
    for (name, currency, _), at in checks.items():
        expected = catalog.terms_currency(ids[name][1], at)
        if expected is not None and expected != currency:
            return None

    partitions.partitions_ensure({(d.year, d.month) for d in batch.occurred_at})

    # One line of COPY text per record, written by us rather than by psycopg's write_row (several
    # times cheaper: docs/performance.md, "Ingestion"). The hash text is wire.content_hash_text's,
    # inlined (a call per record is a noticeable share of this loop), with the revenue
    # normalized as columns.normalized_revenue does; tests/usage/test_fast_path.py holds both
    # paths equal. Every value but customer_ref is from a closed alphabet (checked), so the
    # line is the hash text with tabs for separators, unless some customer_ref needs COPY's
    # escapes (or holds the separator).
    refs = set(batch.customer_ref)
    refs.discard(None)
    special = any(ch in ref for ref in cast(set[str], refs) for ch in "\\\t\n\r\x1f")
    blake2b = hashlib.blake2b
    prefix = f"{host.pk}\t{now.isoformat()}\t"
    key_prefix = f"{host.pk}\t"
    lines: list[str] = []
    keys: list[str] = []
    hashes: list[str] = []
    for (
        event_id,
        model,
        at_text,
        category,
        input_tokens,
        cached_input_tokens,
        output_tokens,
        requests,
        revenue,
        currency,
        region,
        ref,
    ) in zip(
        event_ids,
        batch.model,
        batch.occurred_text,
        batch.customer_category,
        batch.input_tokens,
        batch.cached_input_tokens,
        batch.output_tokens,
        batch.requests,
        batch.revenue,
        currencies,
        batch.region,
        batch.customer_ref,
        strict=True,
    ):
        model_id, license_id, licensor_id = ids[model]
        if "." in revenue:
            revenue = revenue.rstrip("0").rstrip(".")
        region = region or ""
        ref = ref or ""
        text = (
            f"{model_id}\x1f{at_text}\x1f{category}\x1f{input_tokens}"
            f"\x1f{cached_input_tokens}\x1f{output_tokens}\x1f{requests}\x1f{revenue}"
            f"\x1f{currency}\x1f{region}\x1f{ref}\x1f"
        )
        digest = blake2b(text.encode(), digest_size=16).hexdigest()
        hashes.append(digest)
        keys.append(f"{key_prefix}{event_id}\t\\\\x{digest}\t{at_text}\n")
        if special:
            head = text[: -len(ref) - 1].replace("\x1f", "\t") + _copy_escape(ref) + "\t"
        else:
            head = text.replace("\x1f", "\t")
        # Not late: _write_valid turns the "f" (_LATE_AT from the end) into "t" where it is.
        lines.append(f"{prefix}{head}\t{event_id}\t{license_id}\t{licensor_id}\tf\t\\\\x{digest}\n")

    for attempt in range(DEADLOCK_RETRIES):
        try:
            outcome, late = _write_valid(
                host=host,
                batch=batch,
                licensor_of={name: licensor_id for name, (_, _, licensor_id) in ids.items()},
                lines=lines,
                keys=keys,
                hashes=hashes,
                first=f"{start:%Y-%m}",
            )
            break
        except (OperationalError, psycopg.errors.DeadlockDetected) as exc:
            # Not expected either (the claim's COPY and ON CONFLICT both take key locks in
            # event_id order), but a retry is a first send all the same.
            if not _deadlocked(exc) or attempt == DEADLOCK_RETRIES - 1:
                raise

    result = IngestResult(late=late, path="fast")
    if outcome:
        for index, event_id in enumerate(event_ids):
            status = outcome.get(event_id)
            if status is None:
                continue
            if status[0] == "duplicate":
                result.results.append(_duplicate(index, event_id))
            else:
                result.results.append(_conflict(index, event_id))
    result.accepted = len(event_ids) - len(outcome)
    result.duplicates = sum(1 for r in result.results if r["status"] == "duplicate")
    result.rejected = len(result.results) - result.duplicates
    return result


def _deadlocked(exc: BaseException) -> bool:
    """Whether PostgreSQL aborted the transaction to break a deadlock: a Django error (from a
    statement run through Django's cursor) or psycopg's own (from a COPY on the raw cursor)."""
    return "40P01" in (getattr(exc, "sqlstate", None), getattr(exc.__cause__, "sqlstate", None))


def _copy_escape(text: str) -> str:
    """A value for COPY's text format."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# The fast path's COPY columns: the hash text's fields first (wire.content_hash_text's order),
# then the rest.
VALID_COPY_COLUMNS = (
    "host_id, received_at, model_id, occurred_at, customer_category, input_tokens,"
    " cached_input_tokens, output_tokens, requests, revenue, currency, region, customer_ref,"
    " corrects, event_id, license_id, licensor_id, late, content_hash"
)
# Where a fast-path line holds its late flag ("f" or "t"), counted from the line's end: the flag,
# a tab, the bytea's "\\x" (escaped for COPY: 3 characters), 32 hex digits and the newline.
_LATE_AT = 38


@transaction.atomic(durable=True)
def _write_valid(
    *,
    host: Host,
    batch: ValidBatch,
    licensor_of: dict[str, int],
    lines: list[str],
    keys: list[str],
    hashes: list[str],
    first: str = "0000-00",
) -> tuple[Outcome, int]:
    """`_write` for the fast path's COPY lines (no corrections). Returns the outcome of the
    event_ids not simply accepted, and how many of the accepted are late. `licensor_of`: the
    licensor of each model name; `lines` and `keys`: the COPY text of each record and of its
    claim; `hashes`: each record's content hash (hex); `first`: the batch's earliest month
    ("YYYY-MM")."""
    outcome: Outcome = {}
    with connection.cursor() as cursor:
        cursor.execute(closing.INGEST_LOCKS_SQL, {"host": host.pk})
        cursor.execute(closing.ANY_CLOSED_SQL, {"host": host.pk, "first": first})
        late: list[int] = []
        if cursor.fetchone()[0]:
            is_late = closing.late_rule(cursor, host_id=host.pk, first=first)
            late = [
                index
                for index, (model, at_text) in enumerate(
                    zip(batch.model, batch.occurred_text, strict=True)
                )
                if is_late(licensor_of[model], at_text[:7])
            ]
        event_ids = batch.event_id
        unclaimed = _claim_valid(cursor, host=host, keys=keys, event_ids=event_ids)
        if unclaimed:
            _classify(
                cursor,
                host=host,
                hashes={
                    e: bytes.fromhex(h)
                    for e, h in zip(event_ids, hashes, strict=True)
                    if e in unclaimed
                },
                outcome=outcome,
            )
        if late:
            lines = lines.copy()
            for index in late:
                line = lines[index]
                lines[index] = f"{line[:-_LATE_AT]}t{line[1 - _LATE_AT :]}"
        if unclaimed:
            lines = [line for e, line in zip(event_ids, lines, strict=True) if e not in unclaimed]
        with cursor.cursor.copy(f"COPY usage_record ({VALID_COPY_COLUMNS}) FROM STDIN") as copy:
            copy.write("".join(lines))
    return outcome, sum(1 for index in late if event_ids[index] not in unclaimed)


@transaction.atomic(durable=True)
def _write(*, host: Host, candidates: list[Resolved], now: datetime) -> Outcome:
    """The one transaction of a batch. Returns the status of every event_id that was not
    simply accepted: ("duplicate", None), ("conflict", None) or ("rejected", (field, message))."""
    outcome: Outcome = {}
    if not candidates:
        return outcome
    with connection.cursor() as cursor:
        # Shared with other batches, exclusive with period_close: a batch that saw a period open
        # must commit before the period can close, or its record would be neither in the
        # settlement nor marked late for the next run's adjustment.
        cursor.execute(closing.INGEST_LOCKS_SQL, {"host": host.pk})
        first = min(f"{i.record.occurred_at:%Y-%m}" for i in candidates)
        is_late = closing.late_rule(cursor, host_id=host.pk, first=first)
        for item in candidates:
            item.late = is_late(item.licensor_id, f"{item.record.occurred_at:%Y-%m}")

        originals = [i for i in candidates if not i.record.corrects]
        corrections = [i for i in candidates if i.record.corrects]
        _claim_and_store(cursor, host=host, items=originals, now=now, outcome=outcome)
        if corrections:
            accepted = check_corrections(cursor, host=host, items=corrections, outcome=outcome)
            _claim_and_store(cursor, host=host, items=accepted, now=now, outcome=outcome)
    return outcome


def _claim_and_store(
    cursor: Any, *, host: Host, items: list[Resolved], now: datetime, outcome: Outcome
) -> None:
    """Claim the items' event_ids, then COPY the records of those claimed into usage_record;
    the unclaimed go into `outcome` as duplicate or conflict."""
    if not items:
        return
    CLAIMS_BY_PATH["on_conflict"] += 1
    unclaimed = _claim(
        cursor,
        keys=[(host.pk, i.record.event_id, i.content_hash, i.record.occurred_at) for i in items],
    )
    if unclaimed:
        _classify(
            cursor,
            host=host,
            hashes={
                i.record.event_id: i.content_hash for i in items if i.record.event_id in unclaimed
            },
            outcome=outcome,
        )
    raw = cursor.cursor  # the psycopg cursor under Django's wrapper, for COPY
    with raw.copy(f"COPY usage_record (host_id, received_at, {RECORD_COLUMNS}) FROM STDIN") as copy:
        write_row = copy.write_row
        for item in items:
            if item.record.event_id not in unclaimed:
                write_row((host.pk, now, *item.row()))


def _claim_valid(cursor: Any, *, host: Host, keys: list[str], event_ids: list[str]) -> set[str]:
    """The fast path's claim: `_claim` of `keys` (COPY lines in CLAIM_COLUMNS, one per event_id of
    `event_ids`, all distinct), by a straight COPY when no event_id seems claimed (PROBE_SQL)."""
    cursor.execute(PROBE_SQL, [host.pk, event_ids[:: max(1, len(event_ids) // PROBE_IDS)]])
    if cursor.fetchone() is None:
        # Sorted lines are in event_id order: each starts with the same host id and a tab, and
        # the tab after the event_id sorts before any of its characters, so a prefix comes first,
        # as in usage_key's "C" collation. Concurrent COPYs take the key locks in one order.
        text = "".join(sorted(keys))
        try:
            with transaction.atomic():
                with cursor.cursor.copy(f"COPY usage_key ({CLAIM_COLUMNS}) FROM STDIN") as copy:
                    copy.write(text)
        except psycopg.errors.UniqueViolation:
            CLAIMS_BY_PATH["copy_refused"] += 1
        else:
            CLAIMS_BY_PATH["copy"] += 1
            return set()
    else:
        CLAIMS_BY_PATH["on_conflict"] += 1
    return _claim(cursor, keys="".join(keys))


def _claim(cursor: Any, *, keys: str | list[tuple[int, str, bytes, datetime]]) -> set[str]:
    """Claim the event_ids of `keys`, (host_id, event_id, content_hash, occurred_at) as rows or
    as their COPY text; returns those that were not claimed."""
    cursor.execute(CLAIM_STAGE_SQL)
    cursor.execute("TRUNCATE usage_claim")
    raw = cursor.cursor  # the psycopg cursor under Django's wrapper, for COPY
    with raw.copy(f"COPY usage_claim ({CLAIM_COLUMNS}) FROM STDIN") as copy:
        if isinstance(keys, str):
            copy.write(keys)
        else:
            for row in keys:
                copy.write_row(row)
    cursor.execute(CLAIM_SQL)
    return {row[0] for row in cursor.fetchall()}


def _classify(cursor: Any, *, host: Host, hashes: dict[str, bytes], outcome: Outcome) -> None:
    """Put the unclaimed event_ids (`hashes`: each one's content hash) into `outcome`. They were
    claimed before (by an earlier batch, or a concurrent one that has committed: ON CONFLICT
    waited for it). Same hash: duplicate; another hash: conflict."""
    cursor.execute(
        "SELECT event_id, content_hash FROM usage_key WHERE host_id = %s AND event_id = ANY(%s)",
        [host.pk, list(hashes)],
    )
    for event_id, stored_hash in cursor.fetchall():
        same = bytes(stored_hash) == hashes[event_id]
        outcome[event_id] = ("duplicate" if same else "conflict", None)


@transaction.atomic
def period_close(*, host: Host, licensor: Licensor, period: str) -> PeriodClose:
    """Mark (host, licensor, period 'YYYY-MM') settled; idempotent. Billing calls this when a
    settlement is approved. From its commit on, usage for that month of that
    licensor's models is accepted with `late=True`.

    Waits for in-flight ingest batches of the host (the advisory lock they hold shared), so no
    batch that saw the period open commits after the close."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [closing.PERIOD_LOCK_CLASS, host.pk])
    close, _ = PeriodClose.objects.get_or_create(
        host=host, licensor=licensor, period=period, defaults={"closed_at": timezone.now()}
    )
    return close


def usage_partitions_ensure(*, today: datetime | None = None, ahead: int = 3) -> list[str]:
    """Partitions for this month and `ahead` months after it (the beat task's work)."""
    today = today or timezone.now()
    months = [add_months(today.year, today.month, d) for d in range(ahead + 1)]
    return partitions.partitions_ensure(months)
