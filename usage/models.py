"""Usage records: the append-only input of billing.

Three tables (docs/ingestion.md, "Storage", says why this shape):

- `usage_record`: one row per accepted record, range-partitioned by month of `occurred_at`
  (`usage_record_p2026_10` holds October 2026), so a month's billing scan reads one partition.
  Its primary key is (host_id, occurred_at, id) in PostgreSQL: the order every read of a
  host's records goes by, and it must hold the partition key (a partitioned table's unique keys
  must) and the distribution column of a table distributed by host (docs/scaling.md). A BRIN
  index on `id` serves the few reads by id alone (migration 0007). Django sees `id` alone (ids
  come from one sequence, so they are unique anyway).
- `usage_key`: one row per (host, event_id), unpartitioned: the idempotency claim. A unique index on
  the partitioned table cannot span months, so the claim lives here and is written in the same
  transaction as the record (services.usage_batch_ingest).
- `usage_periodclose`: the (host, licensor, month) periods that billing has settled; a record that
  lands in one is accepted and marked `late`.

Rows of `usage_record` and `usage_key` are never updated or deleted: a trigger refuses it (see the
migration), so a settled month can always be re-derived from the rows that were there. A mistake is
fixed by a correction record (`corrects`), never by an edit.

Denormalized at ingest, so billing needs no catalog walk per record: `model` is the resolved model
(slug or alias), `license` its effective license (a derivative's is its nearest licensed
ancestor's), `licensor` that license's licensor (who is paid, which for a fine-tune need not be the
model's own licensor). The license version is not stored: billing resolves it in SQL from the
`effective_from` ranges at `occurred_at`. Catalog rows are never deleted (PROTECT), so these ids
carry no database foreign keys: each would cost a lookup per inserted row on the hot path.
"""

from __future__ import annotations

from django.db import models

from core.periods import PERIOD_PATTERN
from core.vocabulary import CUSTOMER_CATEGORIES
from licensing.models import Host, License, LicensedModel, Licensor

CATEGORY_CHOICES = [(c, c) for c in CUSTOMER_CATEGORIES]


class UsageRecord(models.Model):
    """One metered record as accepted. Counts are integers (tokens, requests); `revenue` is the
    host's net revenue in `currency`, major units (dollars), 6 decimal places. A correction
    (`corrects` set) holds signed deltas of its original's numbers."""

    id = models.BigAutoField(primary_key=True)
    host = models.ForeignKey(Host, models.DO_NOTHING, db_constraint=False, related_name="+")
    event_id = models.CharField(max_length=128)
    model = models.ForeignKey(
        LicensedModel, models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    license = models.ForeignKey(License, models.DO_NOTHING, db_constraint=False, related_name="+")
    licensor = models.ForeignKey(Licensor, models.DO_NOTHING, db_constraint=False, related_name="+")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    customer_category = models.CharField(max_length=16, choices=CATEGORY_CHOICES)
    input_tokens = models.BigIntegerField()
    cached_input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    requests = models.BigIntegerField()
    revenue = models.DecimalField(max_digits=20, decimal_places=6)
    currency = models.CharField(max_length=3)
    region = models.CharField(max_length=2, blank=True)  # "" when the host did not say
    customer_ref = models.CharField(max_length=128, blank=True)
    # The event_id of the original this record corrects ("" for an original). A correction has
    # its original's occurred_at, so it lands in the same month and partition.
    corrects = models.CharField(max_length=128, blank=True)
    # True when the (host, licensor, month of occurred_at) was already closed by billing.
    late = models.BooleanField(default=False)
    content_hash = models.BinaryField(max_length=16)  # BLAKE2b-128, wire.Record.content_hash

    class Meta:
        db_table = "usage_record"
        managed = True
        ordering = ["occurred_at", "id"]

    def __str__(self) -> str:
        return f"{self.event_id} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class UsageKey(models.Model):
    """The idempotency claim of one (host, event_id): written in the same transaction as its
    record, never on its own, so an event_id is never claimed without being stored (the failure
    mode of openmeter#5118)."""

    pk = models.CompositePrimaryKey("host", "event_id")
    host = models.ForeignKey(Host, models.DO_NOTHING, db_constraint=False, related_name="+")
    # Compared byte by byte ("C"): an event_id is an opaque identifier, and its unique index and
    # the claim's sort then compare with memcmp rather than the database's locale.
    event_id = models.CharField(max_length=128, db_collation="C")
    content_hash = models.BinaryField(max_length=16)
    # Where the record is: its partition is the month of this timestamp.
    occurred_at = models.DateTimeField()

    class Meta:
        db_table = "usage_key"

    def __str__(self) -> str:
        return f"{self.host_id}/{self.event_id}"


class PeriodClose(models.Model):
    """A (host, licensor, month) that billing has settled (approved). Usage that lands
    in it afterwards is accepted and marked late; the next billing run bills it as an adjustment."""

    host = models.ForeignKey(Host, models.PROTECT, related_name="+")
    licensor = models.ForeignKey(Licensor, models.PROTECT, related_name="+")
    period = models.CharField(max_length=7)  # "YYYY-MM", a month of occurred_at in UTC
    closed_at = models.DateTimeField()

    class Meta:
        db_table = "usage_periodclose"
        constraints = [
            models.UniqueConstraint(
                fields=["host", "licensor", "period"], name="usage_periodclose_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(period__regex=PERIOD_PATTERN),
                name="usage_periodclose_period_format",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.host_id}/{self.licensor_id} {self.period}"


class UsageRejection(models.Model):
    """A record refused by `POST /api/v1/usage` or `POST /api/v1/events` (or a whole request
    refused as malformed: then `event_id` is "" and `index` null), with the errors it was answered
    with, so a client that ignores answers still finds them (`GET /api/v1/usage/rejections`).
    Not usage: kept 30 days, then deleted by a beat task (usage.rejections)."""

    ENDPOINTS = [("usage", "usage"), ("events", "events")]

    id = models.BigAutoField(primary_key=True)
    host = models.ForeignKey(Host, models.CASCADE, related_name="+")
    received_at = models.DateTimeField()
    endpoint = models.CharField(max_length=8, choices=ENDPOINTS)
    index = models.IntegerField(null=True)  # the record's (event's) position in its request
    event_id = models.CharField(max_length=128, blank=True)  # "" when it had no valid one
    errors = models.JSONField()  # field -> ["<code>: <sentence>", ...], as answered

    class Meta:
        db_table = "usage_rejection"
        indexes = [
            models.Index(fields=["host", "id"], name="usage_rejection_host_id"),
            models.Index(fields=["received_at"], name="usage_rejection_received_at"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.event_id or '(no event_id)'} at {self.received_at:%Y-%m-%d}"


class PeriodComplete(models.Model):
    """A month whose billing run completed (ended `done` or `partial`). From `completed_at` on,
    every (host, licensor) pair that had no usage in that run is settled for the month, so its
    later usage of the month is accepted late and billed as an adjustment by the next run; the
    pairs that had usage are the month's `PeriodOpen` rows, which close at their settlement's
    decision (`PeriodClose`). One row per month instead of one per host and licensor: ingestion
    asks "completed, and not open?" (docs/billing.md, "Late usage of a pair without a
    settlement")."""

    period = models.CharField(max_length=7, unique=True)  # "YYYY-MM", UTC month of occurred_at
    completed_at = models.DateTimeField()
    # The completing run's aggregation cut-off: usage received after it but committed before
    # `completed_at` was in no run and is not late; the sweep after the completion finds it.
    snapshot_at = models.DateTimeField(null=True, blank=True)
    swept_at = models.DateTimeField(null=True, blank=True)  # when that sweep was done

    class Meta:
        db_table = "usage_periodcomplete"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(period__regex=PERIOD_PATTERN),
                name="usage_periodcomplete_period_format",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.period} completed"


class PeriodOpen(models.Model):
    """A (host, licensor, month) that had usage in the month's completed run: it stays open after
    the completion, until its settlement is decided (`PeriodClose`)."""

    host = models.ForeignKey(Host, models.PROTECT, related_name="+")
    licensor = models.ForeignKey(Licensor, models.PROTECT, related_name="+")
    period = models.CharField(max_length=7)  # "YYYY-MM"

    class Meta:
        db_table = "usage_periodopen"
        constraints = [
            models.UniqueConstraint(
                fields=["host", "licensor", "period"], name="usage_periodopen_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.host_id}/{self.licensor_id} {self.period} open"
