"""Reads of the books. Balances are sums of postings, computed by PostgreSQL; nothing stores them.

Every amount is a signed int of the currency's minor unit (cents for USD), debit-positive: a
host's receivable is positive while the host owes, a licensor's payable negative while the
platform owes the licensor (docs/ledger.md, "Signs").
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.db.models import Q, Sum

from ledger.models import Account, Posting
from licensing.models import Host, Licensor


def _as_of(at: datetime | None) -> Q:
    # created_at is taken under the chain lock, so "entries up to `at`" is a prefix of the chain.
    return Q() if at is None else Q(entry__created_at__lte=at)


def account_balance(*, account: Account, at: datetime | None = None) -> int:
    """The account's balance in minor units of its currency, now or as of `at` (inclusive)."""
    total = Posting.objects.filter(_as_of(at), account=account).aggregate(total=Sum("amount"))
    return int(total["total"] or 0)


def party_balances(
    *, owner: Licensor | Host | None, at: datetime | None = None
) -> dict[str, dict[str, int]]:
    """A party's balances per currency and account kind: {"USD": {"payable": -1250}}.

    `owner` is a licensor, a host, or None for the platform's own accounts. Accounts with no
    posting (yet, or as of `at`) are left out.
    """
    if isinstance(owner, Licensor):
        accounts = Q(account__licensor=owner)
    elif isinstance(owner, Host):
        accounts = Q(account__host=owner)
    elif owner is None:
        accounts = Q(account__licensor__isnull=True, account__host__isnull=True)
    else:
        raise TypeError(f"a party is a Licensor, a Host or None, not {owner!r}")
    rows = (
        Posting.objects.filter(accounts, _as_of(at))
        .values("currency", "account__kind")
        .annotate(total=Sum("amount"))
        .order_by("currency", "account__kind")
    )
    balances: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        balances[row["currency"]][row["account__kind"]] = int(row["total"])
    return dict(balances)


def trial_balance(*, at: datetime | None = None) -> dict[str, int]:
    """The sum of every account's balance per currency: zero in each, or the books are broken."""
    rows = (
        Posting.objects.filter(_as_of(at))
        .values("currency")
        .annotate(total=Sum("amount"))
        .order_by("currency")
    )
    return {row["currency"]: int(row["total"]) for row in rows}
