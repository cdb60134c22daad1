"""Host payments by bank transfer, the platform fee and withholding, and manual payouts
(docs/payouts.md): the ledger after every step, the minimum carried forward, one payout per
licensor, currency and day, the catalog's payout node, and the payout API."""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from billing.models import PayableSettlement, Payout, PayoutAdjustment, Settlement
from billing.payouts import PaymentError, host_payment_record, payout_mark_paid, payout_split
from billing.review import settlement_approve
from ledger.models import JournalEntry
from ledger.selectors import party_balances, trial_balance
from ledger.verify import verify_books
from licensing.catalog import CatalogError, catalog_import
from licensing.models import Host, Licensor, LicensorMembership
from licensing.selectors import licensor_reviewer_permissions
from tests.billing.conftest import minimax_catalog, post_usage, record, run_billing, settlement_of

DAY = dt.date(2026, 11, 5)


def payout_terms(**payout: object) -> None:
    catalog_import({"licensors": [{"slug": "minimax", "name": "MiniMax", "payout": {**payout}}]})


@pytest.fixture
def approved_october(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> Settlement:
    """MiniMax/Fireworks October: 12% of 75,300.00 = 9,036.00, approved."""
    host, _ = minimax_world
    post_usage(client_for(host=host), [record("c-1", revenue="75300.00")])
    run_billing("2026-10")
    settlement = settlement_of(licensor="minimax", host="fireworks", period="2026-10")
    return settlement_approve(settlement=settlement, actor="test")


def pay_by_bank(settlement: Settlement, reference: str = "BANK-REF-1") -> str:
    out = io.StringIO()
    call_command(
        "record_host_payment",
        "--settlement",
        str(settlement.pk),
        "--reference",
        reference,
        stdout=out,
    )
    return out.getvalue()


def run(day: dt.date = DAY) -> str:
    out = io.StringIO()
    call_command("run_payouts", "--as-of", day.isoformat(), stdout=out)
    return out.getvalue()


def assert_books_clean() -> None:
    report = verify_books()
    assert report.ok, report.problems
    assert trial_balance() in ({}, {"USD": 0})


# --- host payments ---------------------------------------------------------------------------


def test_it_records_a_bank_transfer_with_fee_and_withholding(approved_october: Settlement) -> None:
    # given: October approved with no platform fee; MiniMax's withholding is 10%
    payout_terms(withholding_percent="10")

    # when
    out = pay_by_bank(approved_october)

    # then: paid, cash in, 903.60 withheld to tax payable, 8,132.40 left payable
    settlement = Settlement.objects.get(pk=approved_october.pk)
    assert settlement.status == "paid"
    assert settlement.payment_reference == "BANK-REF-1"
    assert "paid: 9036.00 USD" in out
    assert party_balances(owner=settlement.host) == {"USD": {"receivable": 0}}
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": -813240}}
    assert party_balances(owner=None) == {"USD": {"cash": 903600, "tax_payable": -90360}}
    item = PayableSettlement.objects.get(settlement=settlement)
    assert (item.gross_minor, item.platform_fee_minor, item.withholding_minor) == (903600, 0, 90360)
    assert_books_clean()


def test_it_refuses_a_second_payment_an_unapproved_settlement_and_another_amount(
    approved_october: Settlement, minimax_world: tuple[Host, Licensor]
) -> None:
    # given: October paid once
    pay_by_bank(approved_october)
    entries = JournalEntry.objects.count()

    # when / then: paid again: a clear error, nothing posted
    with pytest.raises(CommandError, match=r"settlement: .* is already paid"):
        pay_by_bank(approved_october, "BANK-REF-2")
    assert JournalEntry.objects.count() == entries

    # a draft cannot be paid
    draft = Settlement.objects.create(
        licensor=approved_october.licensor,
        host=approved_october.host,
        period="2026-11",
        currency="USD",
        total=Decimal("10.00"),
        computed_at=approved_october.computed_at,
    )
    with pytest.raises(CommandError, match="is draft: only an approved or invoiced"):
        pay_by_bank(draft)
    # another amount than the total
    settlement_approve(settlement=draft, actor="test")
    with pytest.raises(PaymentError, match=r"amount: 9\.99 is not the settlement's total 10\.00"):
        host_payment_record(settlement_id=str(draft.pk), reference="R", amount=Decimal("9.99"))
    # no reference
    with pytest.raises(PaymentError, match="reference: the bank reference is required"):
        host_payment_record(settlement_id=str(draft.pk), reference="  ")
    assert Settlement.objects.get(pk=draft.pk).status == "approved"
    assert JournalEntry.objects.count() == entries + 1  # only the draft's accrual
    assert_books_clean()


def test_it_takes_the_licensors_own_platform_fee_at_approval(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient], settings: object
) -> None:
    # given: the platform default 10%, MiniMax's own 5%
    settings.TOLLGATE_PLATFORM_FEE_PERCENT = "10"  # type: ignore[attr-defined]
    payout_terms(platform_fee_percent="5")
    host, _ = minimax_world
    post_usage(client_for(host=host), [record("c-1", revenue="75300.00")])
    run_billing("2026-10")

    # when
    settlement = settlement_approve(
        settlement=settlement_of(licensor="minimax", host="fireworks", period="2026-10"),
        actor="test",
    )

    # then: 5% of 9,036.00 = 451.80 to platform revenue
    assert party_balances(owner=None) == {"USD": {"platform_revenue": -45180}}
    assert party_balances(owner=settlement.licensor) == {"USD": {"payable": -858420}}


# --- manual payouts --------------------------------------------------------------------------


def test_it_pays_out_by_bank_and_an_operator_records_it(approved_october: Settlement) -> None:
    # given: October approved and paid by bank transfer
    pay_by_bank(approved_october)

    # when: the run of the day
    out = run()

    # then: one pending manual payout of the whole total
    payout = Payout.objects.get()
    assert (payout.rail, payout.status, payout.day) == ("manual", "pending", DAY)
    assert (payout.gross_minor, payout.platform_fee_minor, payout.net_minor) == (903600, 0, 903600)
    assert "9036.00 (manual, pending): 1 settlement(s)" in out
    assert party_balances(owner=approved_october.licensor) == {"USD": {"payable": -903600}}

    # when: the operator records the bank reference
    payout_mark_paid(payout_id=str(payout.pk), reference="OUT-77")

    # then: paid, the licensor is owed nothing, the platform's cash went out
    payout.refresh_from_db()
    assert (payout.status, payout.reference) == ("paid", "OUT-77")
    assert payout.paid_at is not None
    assert party_balances(owner=approved_october.licensor) == {"USD": {"payable": 0}}
    assert party_balances(owner=None) == {"USD": {"cash": 0}}
    assert_books_clean()


def test_it_carries_a_balance_below_the_minimum_forward(
    approved_october: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # given: a 10,000.00 USD minimum; October (9,036.00) paid
    payout_terms(minimum={"USD": "10000.00"})
    pay_by_bank(approved_october)

    # when: the November run
    run(DAY)

    # then: nothing paid out; the settlement waits
    assert not Payout.objects.exists()

    # given: November billed (12% of 10,000.00 = 1,200.00), approved and paid
    post_usage(
        client_for(host=approved_october.host),
        [record("c-nov", revenue="10000.00", at="2026-11-10T12:00:00Z")],
    )
    run_billing("2026-11")
    november = settlement_approve(
        settlement=settlement_of(licensor="minimax", host="fireworks", period="2026-11"),
        actor="test",
    )
    pay_by_bank(november, "BANK-REF-NOV")

    # when: the December run
    run(dt.date(2026, 12, 5))

    # then: one payout of both settlements, 10,236.00
    payout = Payout.objects.get()
    assert payout.net_minor == 1023600
    assert sorted(payout.items.values_list("settlement__period", flat=True)) == [
        "2026-10",
        "2026-11",
    ]
    assert_books_clean()


def test_it_makes_one_payout_per_day_however_often_it_runs(approved_october: Settlement) -> None:
    # given
    pay_by_bank(approved_october)

    # when: the same day twice
    run(DAY)
    second = run(DAY)

    # then
    assert Payout.objects.count() == 1
    assert "0 payout(s) made for 2026-11-05" in second


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_make_one_payout(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: October approved and paid (committed)
    host, _ = minimax_world
    post_usage(client_for(host=host), [record("c-1", revenue="75300.00")])
    run_billing("2026-10")
    october = settlement_approve(
        settlement=settlement_of(licensor="minimax", host="fireworks", period="2026-10"),
        actor="test",
    )
    pay_by_bank(october)

    # when: two runs of the same day at once
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def one_run() -> None:
        try:
            barrier.wait()
            run(DAY)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # then: one payout with the one settlement
    assert errors == []
    assert Payout.objects.count() == 1
    assert PayableSettlement.objects.get().payout_id == Payout.objects.get().pk
    assert_books_clean()


def test_a_negative_settlement_is_carried_into_the_next_payout(
    approved_october: Settlement,
) -> None:
    # given: October paid (9,036.00), and an approved credit of -36.00 (late corrections)
    pay_by_bank(approved_october)
    credit = Settlement.objects.create(
        licensor=approved_october.licensor,
        host=approved_october.host,
        period="2026-11",
        currency="USD",
        total=Decimal("-36.00"),
        computed_at=approved_october.computed_at,
    )
    settlement_approve(settlement=credit, actor="test")

    # when
    run(DAY)

    # then: net 9,000.00 = 9,036.00 + (-36.00) carried
    payout = Payout.objects.get()
    assert (payout.gross_minor, payout.carried_forward_minor, payout.net_minor) == (
        903600,
        -3600,
        900000,
    )
    payout_mark_paid(payout_id=str(payout.pk), reference="OUT-1")
    assert party_balances(owner=approved_october.licensor) == {"USD": {"payable": 0}}
    assert_books_clean()


def test_a_negative_balance_waits(approved_october: Settlement) -> None:
    # given: only a credit of -36.00 approved (nothing paid by the host)
    credit = Settlement.objects.create(
        licensor=approved_october.licensor,
        host=approved_october.host,
        period="2026-11",
        currency="USD",
        total=Decimal("-36.00"),
        computed_at=approved_october.computed_at,
    )
    settlement_approve(settlement=credit, actor="test")

    # when
    run(DAY)

    # then: no payout; the credit is carried (once, however often the run sees it)
    run(dt.date(2026, 11, 6))
    assert not Payout.objects.exists()
    assert list(PayoutAdjustment.objects.values_list("amount_minor", flat=True)) == [-3600]
    assert_books_clean()


# --- the split -------------------------------------------------------------------------------


@given(
    total=st.integers(min_value=-(10**15), max_value=10**15),
    fee=st.decimals(min_value=0, max_value=100, places=3),
    withholding=st.decimals(min_value=0, max_value=100, places=3),
)
def test_net_fee_and_withholding_add_up_to_the_total(
    total: int, fee: Decimal, withholding: Decimal
) -> None:
    split = payout_split(total, fee, withholding)
    assert split.net + split.fee + split.withholding == total
    assert abs(split.fee) <= abs(total) and abs(split.withholding) <= abs(total) - abs(split.fee)


def test_it_rounds_fee_and_withholding_half_up_once() -> None:
    # 12.5% of 0.13 = 0.01625 -> 0.02; 10% of 0.11 = 0.011 -> 0.01
    split = payout_split(13, Decimal("12.5"), Decimal("10"))
    assert (split.fee, split.withholding, split.net) == (2, 1, 10)


# --- the catalog -----------------------------------------------------------------------------


def test_the_catalog_validates_the_payout_node_with_paths(db: None) -> None:
    with pytest.raises(CatalogError) as caught:
        catalog_import(
            {
                "licensors": [
                    {
                        "slug": "minimax",
                        "name": "MiniMax",
                        "payout": {
                            "rail": "stripe_connect",
                            "minimum": {"USD": "-1", "XXY": "1"},
                            "withholding_percent": "101",
                            "platform_fee_percent": 5.5,
                            "iban": "x",
                        },
                    }
                ]
            }
        )
    assert sorted(caught.value.errors) == [
        "licensors[0].payout.iban: unknown field",
        "licensors[0].payout.minimum.USD: must be >= 0",
        "licensors[0].payout.minimum.XXY: not an ISO 4217 currency code such as USD",
        "licensors[0].payout.platform_fee_percent: must be a decimal string from 0 to 100",
        "licensors[0].payout.stripe_account: is required when rail is stripe_connect",
        "licensors[0].payout.withholding_percent: must be from 0 to 100",
    ]
    assert not Licensor.objects.exists()


def test_the_catalog_stores_the_payout_node(db: None) -> None:
    catalog_import(minimax_catalog())
    payout_terms(
        rail="stripe_connect",
        stripe_account="acct_1MiniMax",
        minimum={"USD": "100.00"},
        withholding_percent="10",
        platform_fee_percent="5",
    )
    licensor = Licensor.objects.get(slug="minimax")
    assert licensor.payout_rail == "stripe_connect"
    assert licensor.payout_stripe_account == "acct_1MiniMax"
    assert licensor.payout_minimum == {"USD": "100.00"}
    assert licensor.payout_withholding_percent == Decimal("10")
    assert licensor.payout_platform_fee_percent == Decimal("5")
    # a licensor imported without `payout` keeps what it has
    catalog_import({"licensors": [{"slug": "minimax", "name": "MiniMax"}]})
    assert Licensor.objects.get(slug="minimax").payout_rail == "stripe_connect"


# --- the API ---------------------------------------------------------------------------------


def test_the_api_renders_a_payout_and_its_statement(
    approved_october: Settlement, client_for: Callable[..., APIClient]
) -> None:
    # given: a payout of October
    pay_by_bank(approved_october)
    run(DAY)
    payout = Payout.objects.get()
    api = client_for(licensor=approved_october.licensor)

    # when
    listed = api.get("/api/v1/payouts?currency=USD&status=pending")
    one = api.get(f"/api/v1/payouts/{payout.pk}")
    csv_text = api.get(f"/api/v1/payouts/{payout.pk}/statement.csv")

    # then
    assert listed.status_code == 200, listed.content
    assert [p["id"] for p in listed.json()["results"]] == [str(payout.pk)]
    body = one.json()
    created_at = body.pop("created_at")
    assert created_at.startswith("2")
    assert body == {
        "id": str(payout.pk),
        "licensor": "minimax",
        "currency": "USD",
        "rail": "manual",
        "status": "pending",
        "gross": "9036.00",
        "platform_fee": "0.00",
        "withholding": "0.00",
        "carried_forward": "0.00",
        "net": "9036.00",
        "reference": None,
        "settlements": [
            {
                "id": str(approved_october.pk),
                "host": "fireworks",
                "period": "2026-10",
                "total": "9036.00",
            }
        ],
        "paid_at": None,
    }
    assert csv_text.status_code == 200
    rows = csv_text.content.decode().splitlines()
    assert rows[0] == "payout_id,licensor,currency,row,host,period,settlement_id,amount"
    assert rows[1].endswith(f"settlement,fireworks,2026-10,{approved_october.pk},9036.00")
    assert rows[-1].endswith(",net,,,,9036.00")
    assert api.get("/api/v1/payouts?status=paid").json() == {"results": []}
    assert api.get("/api/v1/payouts?currency=usd").status_code == 400
    # a host key is 403
    host_api = client_for(host=approved_october.host)
    assert host_api.get(f"/api/v1/payouts/{payout.pk}").status_code == 403


# --- the admin -------------------------------------------------------------------------------


def test_an_operator_records_a_manual_payout_and_the_reviewer_sees_it(
    approved_october: Settlement, client: Client
) -> None:
    # given: a pending manual payout; an operator and MiniMax's reviewer
    pay_by_bank(approved_october)
    run(DAY)
    payout = Payout.objects.get()
    reviewer = User.objects.create_user("mm-reviewer", password="pw", is_staff=True)
    LicensorMembership.objects.create(user=reviewer, licensor=approved_october.licensor)
    reviewer.user_permissions.add(*licensor_reviewer_permissions())
    operator = User.objects.create_superuser("operator", password="pw")
    record_url = f"/admin/billing/payout/{payout.pk}/record/"

    # when: the reviewer tries to record it; then the operator does
    client.force_login(reviewer)
    refused = client.post(record_url, {"reference": "MINE"})
    client.force_login(operator)
    page = client.get(record_url)
    recorded = client.post(record_url, {"reference": "OUT-2026-11-05"})

    # then: only the operator's reference counts, and the reviewer sees the payout paid
    assert refused.status_code == 403
    assert page.status_code == 200 and b"9036.00" in page.content
    assert recorded.status_code == 302
    payout.refresh_from_db()
    assert (payout.status, payout.reference) == ("paid", "OUT-2026-11-05")
    client.force_login(reviewer)
    listing = client.get("/admin/billing/payout/")
    assert listing.status_code == 200
    assert b"OUT-2026-11-05" in listing.content
    assert party_balances(owner=approved_october.licensor) == {"USD": {"payable": 0}}
    assert_books_clean()


def test_record_host_payment_names_a_malformed_or_unknown_settlement(db: None) -> None:
    with pytest.raises(CommandError, match="settlement: 'nope' is not a settlement id"):
        call_command("record_host_payment", "--settlement", "nope", "--reference", "R")
    unknown = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(CommandError, match=f"settlement: no settlement {unknown}"):
        call_command("record_host_payment", "--settlement", unknown, "--reference", "R")


def test_the_licensor_admin_validates_payout_terms_and_is_for_operators_only(
    minimax_world: tuple[Host, Licensor], client: Client
) -> None:
    # given: an operator, and MiniMax's reviewer
    _, licensor = minimax_world
    url = f"/admin/licensing/licensor/{licensor.pk}/change/"
    operator = User.objects.create_superuser("operator", password="pw")
    reviewer = User.objects.create_user("mm-reviewer", password="pw", is_staff=True)
    LicensorMembership.objects.create(user=reviewer, licensor=licensor)
    form = {
        "slug": "minimax",
        "name": "MiniMax",
        "email": "",
        "payout_rail": "stripe_connect",
        "payout_stripe_account": "",
        "payout_minimum": '{"USD": "100.00"}',
        "payout_withholding_percent": "10",
        "payout_platform_fee_percent": "",
    }

    # when: Connect without an account; then with one
    client.force_login(operator)
    refused = client.post(url, form)
    accepted = client.post(url, {**form, "payout_stripe_account": "acct_1MiniMax"})
    client.force_login(reviewer)
    by_reviewer = client.post(url, {**form, "payout_stripe_account": "acct_1Mine"})

    # then
    assert refused.status_code == 200
    assert b"payout.stripe_account: is required when rail is stripe_connect" in refused.content
    assert accepted.status_code == 302
    assert by_reviewer.status_code == 403
    licensor.refresh_from_db()
    assert (licensor.payout_rail, licensor.payout_stripe_account) == (
        "stripe_connect",
        "acct_1MiniMax",
    )


def test_a_payout_is_recorded_paid_once(approved_october: Settlement) -> None:
    # given: a manual payout recorded paid
    pay_by_bank(approved_october)
    run(DAY)
    payout = Payout.objects.get()
    payout_mark_paid(payout_id=str(payout.pk), reference="OUT-1")

    # when: recorded again, with the same reference (a double click) and with another
    again = payout_mark_paid(payout_id=str(payout.pk), reference="OUT-1")
    with pytest.raises(PaymentError, match=r"payout: payout .* is already paid \(OUT-1\)"):
        payout_mark_paid(payout_id=str(payout.pk), reference="OUT-2")

    # then: one payout entry
    assert again.reference == "OUT-1"
    assert JournalEntry.objects.filter(reference_type="payout").count() == 1
    assert_books_clean()
