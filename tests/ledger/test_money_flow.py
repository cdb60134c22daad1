"""The money flow billing posts (docs/ledger.md, chart of accounts) and the balance selectors."""

from __future__ import annotations

import pytest
from django.db import connection

from ledger.models import Account, AccountKind
from ledger.selectors import account_balance, party_balances, trial_balance
from ledger.services import (
    account_for,
    host_payment_post,
    licensor_payout_post,
    settlement_accrual_post,
)
from tests.factories import HostFactory
from tests.ledger.conftest import run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_accrues_pays_and_pays_out_a_settlement(parties):
    # given: a host and a licensor
    host, licensor = parties
    # when: a settlement of $100.00 with a $10.00 platform fee is approved, paid and paid out
    settlement_accrual_post(
        settlement_id="42",
        host=host,
        licensor=licensor,
        currency="USD",
        amount_minor=10_000,
        platform_fee_minor=1_000,
    )
    after_accrual = party_balances(owner=licensor)
    host_payment_post(payment_id="in_1", host=host, currency="USD", amount_minor=10_000)
    licensor_payout_post(payout_id="po_1", licensor=licensor, currency="USD", amount_minor=9_000)
    # then: the licensor was owed $90.00 and is now paid; the platform kept $10.00 in cash
    assert after_accrual == {"USD": {"payable": -9_000}}
    assert party_balances(owner=licensor) == {"USD": {"payable": 0}}
    assert party_balances(owner=host) == {"USD": {"receivable": 0}}
    assert party_balances(owner=None) == {"USD": {"cash": 1_000, "platform_revenue": -1_000}}
    assert trial_balance() == {"USD": 0}


def test_it_posts_each_settlement_once(parties):
    # given: an accrued settlement
    host, licensor = parties
    first = settlement_accrual_post(
        settlement_id="7", host=host, licensor=licensor, currency="EUR", amount_minor=500
    )
    # when: billing retries the same accrual
    again = settlement_accrual_post(
        settlement_id="7", host=host, licensor=licensor, currency="EUR", amount_minor=500
    )
    # then: one entry; without a fee there is no platform revenue leg
    assert again.pk == first.pk
    assert first.postings.count() == 2
    assert party_balances(owner=host) == {"EUR": {"receivable": 500}}


def test_it_gives_a_balance_as_of_a_point_in_time(usd, parties):
    # given: a payment, a moment, then another payment
    host, _ = parties
    first = host_payment_post(payment_id="p1", host=host, currency="USD", amount_minor=300)
    # The entries' created_at comes from PostgreSQL's clock (ledger_post_entry), so the moment
    # is read from that clock too: no sleep ordering two clocks.
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        [moment] = cursor.fetchone()
    second = host_payment_post(payment_id="p2", host=host, currency="USD", amount_minor=200)
    assert first.created_at <= moment < second.created_at
    # when: the balances are read as of the moment and now
    # then: the first counts only the first payment
    assert account_balance(account=usd["cash"], at=moment) == 300
    assert account_balance(account=usd["cash"], at=first.created_at) == 300  # inclusive
    assert account_balance(account=usd["cash"]) == 500
    assert party_balances(owner=host, at=moment) == {"USD": {"receivable": -300}}


@pytest.mark.parametrize(
    ("amount", "fee", "error"),
    [(0, 0, ValueError), (-5, 0, ValueError), (100, 101, ValueError), (100.0, 0, TypeError)],
)
def test_it_refuses_amounts_that_are_not_positive_ints(parties, amount, fee, error):
    # given: a host and a licensor
    host, licensor = parties
    # when / then: a bad amount or fee is refused before anything is written
    with pytest.raises(error):
        settlement_accrual_post(
            settlement_id="x",
            host=host,
            licensor=licensor,
            currency="USD",
            amount_minor=amount,
            platform_fee_minor=fee,
        )
    assert trial_balance() == {}


def test_it_opens_one_account_when_threads_race_for_it(db):
    # given: a host without accounts, and eight threads on their own connections
    host = HostFactory(slug="racing-host")
    # when: they all ask for its JPY receivable at once
    results = run_in_threads(
        8, lambda i: account_for(owner=host, kind=AccountKind.RECEIVABLE, currency="JPY").pk
    )
    # then: all got the same account
    assert len(set(results)) == 1 and isinstance(results[0], int), results
    assert Account.objects.filter(host=host).count() == 1


def test_a_settlement_credit_mirrors_an_accrual_once() -> None:
    # given a host and a licensor whose settlement came out negative
    from ledger.services import settlement_credit_post
    from tests.factories import LicensorFactory

    host, licensor = HostFactory(slug="credit-host"), LicensorFactory(slug="credit-lic")

    # when the credit is posted twice (a retry)
    first = settlement_credit_post(
        settlement_id="s-neg",
        host=host,
        licensor=licensor,
        currency="USD",
        amount_minor=6000,
        platform_fee_minor=600,
    )
    again = settlement_credit_post(
        settlement_id="s-neg",
        host=host,
        licensor=licensor,
        currency="USD",
        amount_minor=6000,
        platform_fee_minor=600,
    )

    # then one entry credits the host's receivable and debits the payable and the fee
    assert again.pk == first.pk
    assert party_balances(owner=host) == {"USD": {"receivable": -6000}}
    assert party_balances(owner=licensor) == {"USD": {"payable": 5400}}
    assert party_balances(owner=None) == {"USD": {"platform_revenue": 600}}
