"""The books: an append-only double-entry journal that PostgreSQL itself keeps honest.

Licensors are paid from these numbers, so the rules are enforced by the database, whatever client
writes (migration 0002 installs the triggers; docs/ledger.md lists every rule and the test that
tries to break it):

- every journal entry has at least two postings and balances per currency (a deferred constraint
  trigger, checked at commit);
- entries, postings and accounts are never updated or deleted, and the books cannot be truncated
  while they hold an entry: a mistake is corrected by a reversal entry, and an entry can be
  reversed once only (`JournalEntry.reverses` is unique);
- no posting is zero, and a posting's currency is its account's;
- postings can be added to an entry only in the transaction that created it;
- each entry extends the audit chain: `prev_hash` is the hash of the entry with the previous
  `sequence` (a trigger), and `hash` is SHA-256 over it and the entry's canonical content
  (`ledger.chain`, recomputed by `manage.py verify_ledger`).

Amounts are signed integers of the currency's minor unit (cents for USD): a debit is positive, a
credit negative, so every entry sums to zero and an account's balance is the sum of its postings.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from licensing.models import CURRENCY_VALIDATOR, Host, Licensor


class AccountKind(models.TextChoices):
    # What a host owes the platform (an asset): debited when a settlement is approved.
    RECEIVABLE = "receivable", "Receivable (host owes)"
    # What the platform owes a licensor (a liability): credited when a settlement is approved.
    PAYABLE = "payable", "Payable (owed to licensor)"
    # The platform's money at the bank or payment processor (an asset).
    CASH = "cash", "Cash (platform)"
    # The platform's fee on settlements (income).
    PLATFORM_REVENUE = "platform_revenue", "Platform revenue"
    # Tax withheld from licensors' payouts, owed to the tax authority (a liability of the
    # platform's): credited when a host pays a settlement (docs/payouts.md).
    TAX_PAYABLE = "tax_payable", "Tax payable (withheld)"


# Which kind of owner each kind of account has; enforced by the check constraint below, so that a
# licensor receivable or a host payable cannot be opened by mistake.
HOST_KINDS = (AccountKind.RECEIVABLE,)
LICENSOR_KINDS = (AccountKind.PAYABLE,)
PLATFORM_KINDS = (AccountKind.CASH, AccountKind.PLATFORM_REVENUE, AccountKind.TAX_PAYABLE)


class Account(models.Model):
    """One account per (owner, kind, currency). The owner is a licensor, a host or, when both are
    null, the platform itself. Get one with `ledger.services.account_for`."""

    licensor = models.ForeignKey(
        Licensor, on_delete=models.PROTECT, related_name="accounts", null=True, blank=True
    )
    host = models.ForeignKey(
        Host, on_delete=models.PROTECT, related_name="accounts", null=True, blank=True
    )
    kind = models.CharField(max_length=32, choices=AccountKind.choices)
    currency = models.CharField(max_length=3, validators=[CURRENCY_VALIDATOR])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # NULLS NOT DISTINCT (PostgreSQL 15+): the platform's accounts, whose owner columns
            # are both null, are unique too, so that account_for's get-or-create is safe when two
            # transactions race to open the same account.
            models.UniqueConstraint(
                fields=["licensor", "host", "kind", "currency"],
                name="ledger_account_one_per_owner_kind_currency",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=(Q(host__isnull=False, licensor__isnull=True, kind__in=HOST_KINDS))
                | Q(host__isnull=True, licensor__isnull=False, kind__in=LICENSOR_KINDS)
                | Q(host__isnull=True, licensor__isnull=True, kind__in=PLATFORM_KINDS),
                name="ledger_account_owner_matches_kind",
            ),
            models.CheckConstraint(
                condition=Q(currency__regex=r"^[A-Z]{3}$"), name="ledger_account_currency_iso"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.owner_label} {self.kind} {self.currency}"

    @property
    def owner_label(self) -> str:
        if self.host_id is not None:
            return f"host:{self.host_id}"
        if self.licensor_id is not None:
            return f"licensor:{self.licensor_id}"
        return "platform"


class JournalEntry(models.Model):
    """One balanced business event. Never updated, never deleted (see the module docstring)."""

    # Position in the audit chain, 1, 2, 3, ... without gaps; assigned under the chain lock.
    sequence = models.BigIntegerField(unique=True)
    idempotency_key = models.CharField(max_length=200)
    memo = models.TextField(blank=True)
    # What the entry records: "settlement", "invoice", "payment", "payout", "reversal", ...
    # and the id of that thing in its own app (a string, so any id scheme fits).
    reference_type = models.CharField(max_length=32)
    reference_id = models.CharField(max_length=200, blank=True)
    # The entry this one reverses. Unique: an entry can be reversed once only, and it is the
    # database that refuses the second reversal, not a Python check.
    reverses = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="reversed_by"
    )
    # Set by journal_post under the chain lock, so it never decreases along `sequence`.
    created_at = models.DateTimeField()
    # Hex SHA-256 digests (ledger.chain): the previous entry's hash (64 zeros for the first)
    # and this entry's.
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["sequence"]
        verbose_name_plural = "journal entries"
        indexes = [models.Index(fields=["reference_type", "reference_id"])]
        constraints = [
            # What makes journal_post idempotent, even for concurrent callers. (A constraint
            # rather than unique=True: no second, pattern-ops index to write on every insert.)
            models.UniqueConstraint(fields=["idempotency_key"], name="ledger_entry_key_unique"),
            models.CheckConstraint(
                condition=Q(sequence__gte=1), name="ledger_entry_sequence_positive"
            ),
            models.CheckConstraint(
                condition=Q(hash__regex=r"^[0-9a-f]{64}$") & Q(prev_hash__regex=r"^[0-9a-f]{64}$"),
                name="ledger_entry_hashes_hex",
            ),
            models.CheckConstraint(
                condition=~Q(idempotency_key=""), name="ledger_entry_key_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.reference_type} {self.reference_id}".rstrip()


class Posting(models.Model):
    """One leg of a journal entry: a signed amount on one account."""

    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="postings")
    # Signed integer minor units of `currency` (cents for USD): debit > 0, credit < 0, never 0.
    amount = models.BigIntegerField()
    # Always the account's currency (a trigger checks it); stored so that the balance check per
    # currency and the chain need no join.
    currency = models.CharField(max_length=3)

    class Meta:
        ordering = ["entry_id", "id"]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_posting_amount_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} on account {self.account_id}"
