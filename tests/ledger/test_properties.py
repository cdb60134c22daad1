"""Property: any sequence of posts and reversals leaves every currency's balances summing to zero,
each account at what a model of the operations predicts, and verify_ledger clean."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.models import Account, AccountKind
from ledger.selectors import account_balance, trial_balance
from ledger.services import (
    AlreadyReversed,
    PostingSpec,
    account_for,
    journal_post,
    journal_reverse,
)
from ledger.verify import verify_books
from tests.factories import HostFactory, LicensorFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CURRENCIES = ["USD", "EUR", "JPY"]
_keys = itertools.count()

# A leg pair: debit one account, credit another, of one currency (indexes into the account list).
pair = st.tuples(
    st.sampled_from(CURRENCIES),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=1, max_value=10**12),
).filter(lambda p: p[1] != p[2])
post = st.tuples(st.just("post"), st.lists(pair, min_size=1, max_size=3))
reverse = st.tuples(st.just("reverse"), st.integers(min_value=0, max_value=50))
operations = st.lists(st.one_of(post, reverse), min_size=1, max_size=12)


@pytest.fixture
def accounts(transactional_db: None) -> dict[str, list[Account]]:
    host = HostFactory(slug="prop-host")
    licensor = LicensorFactory(slug="prop-licensor")
    return {
        currency: [
            account_for(owner=host, kind=AccountKind.RECEIVABLE, currency=currency),
            account_for(owner=licensor, kind=AccountKind.PAYABLE, currency=currency),
            account_for(owner=None, kind=AccountKind.CASH, currency=currency),
            account_for(owner=None, kind=AccountKind.PLATFORM_REVENUE, currency=currency),
        ]
        for currency in CURRENCIES
    }


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
def test_it_keeps_every_currency_summing_to_zero(accounts, ops):
    # given: the balances before this run of operations (the books persist across examples)
    every_account = [a for group in accounts.values() for a in group]
    before = {a.pk: account_balance(account=a) for a in every_account}
    expected: dict[int, int] = defaultdict(int)
    posted = []
    reversals: set[int] = set()
    # when: the operations are applied
    for kind, arg in ops:
        if kind == "post":
            legs = []
            for currency, debit, credit, amount in arg:
                legs.append(PostingSpec(account=accounts[currency][debit], amount_minor=amount))
                legs.append(PostingSpec(account=accounts[currency][credit], amount_minor=-amount))
            entry = journal_post(
                idempotency_key=f"prop-{next(_keys)}",
                memo="",
                postings=legs,
                reference_type="test",
            )
            posted.append(entry)
            for leg in legs:
                expected[leg.account.pk] += leg.amount_minor
        elif posted:
            target = posted[arg % len(posted)]
            # The same reason again is a retry (the same reversal comes back); another reason
            # is a second reversal (refused).
            try:
                reversal = journal_reverse(entry=target, reason=f"reason {arg % 2}")
            except AlreadyReversed:
                continue
            if reversal.pk in reversals:
                continue
            reversals.add(reversal.pk)
            for account_id, amount in target.postings.values_list("account_id", "amount"):
                expected[account_id] -= amount
    # then: each account moved as predicted, every currency sums to zero, the books verify
    assert {a.pk: account_balance(account=a) - before[a.pk] for a in every_account} == {
        a.pk: expected[a.pk] for a in every_account
    }
    assert all(total == 0 for total in trial_balance().values()), trial_balance()
    report = verify_books()
    assert report.ok, report.problems
