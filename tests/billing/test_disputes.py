"""Disputes that reach an end, through the REST API on a real PostgreSQL: line-level disputes,
the host's answer, a correction, the run's revision, approval, and the history of each step
(docs/billing.md, "Review, disputes and their resolution")."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from billing.models import Settlement, SettlementEvent
from ledger.models import JournalEntry
from ledger.selectors import party_balances, trial_balance
from licensing.models import Host, Licensor
from tests.billing.conftest import post_usage, record, run_billing
from usage.models import PeriodClose, UsageRecord


def current(period: str = "2026-10") -> Settlement:
    return Settlement.objects.exclude(status__in=["superseded", "void"]).get(period=period)


@pytest.fixture
def world(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> dict[str, Any]:
    """October billed: 75,300.00 of commercial revenue at 12% (9036.00) and 4,100.00 free."""
    host, licensor = minimax_world
    host_client = client_for(host=host)
    post_usage(
        host_client,
        [
            record("c-1", revenue="75300.00"),
            record("i-1", revenue="4100.00", category="individual"),
        ],
    )
    run_billing("2026-10")
    return {
        "host": host_client,
        "licensor": client_for(licensor=licensor),
        "settlement": current(),
    }


def _url(s: Settlement, action: str = "") -> str:
    return f"/api/v1/settlements/{s.pk}" + (f"/{action}" if action else "")


def _line_id(client: APIClient, s: Settlement, category: str) -> str:
    lines = client.get(_url(s)).json()["lines"]
    return next(line["id"] for line in lines if line["customer_category"] == category)


def _history(client: APIClient, s: Settlement) -> list[tuple[str, str]]:
    response = client.get(_url(s, "history"))
    assert response.status_code == 200, response.content
    return [(e["actor"], e["action"]) for e in response.json()["results"]]


def test_it_resolves_a_dispute_by_a_revision_the_licensor_approves(world: dict[str, Any]) -> None:
    # given: the licensor disputes the commercial line
    licensor, host, first = world["licensor"], world["host"], world["settlement"]
    commercial = _line_id(licensor, first, "commercial")
    disputed = licensor.post(
        _url(first, "dispute"),
        {
            "reason": "5,300.00 of c-1 was refunded",
            "reason_code": "quantity_contested",
            "lines": [commercial],
            "amount": "636.00",
        },
        format="json",
    )
    assert disputed.status_code == 200, disputed.content
    assert disputed.json()["status"] == "disputed"

    # when: the host answers, corrects its usage of the period, and the run comes round
    answered = host.post(_url(first, "respond"), {"message": "Right, fixing"}, format="json")
    assert answered.status_code == 200, answered.content
    post_usage(host, [record("c-1-fix", corrects="c-1", revenue="-5300.00")])
    run_billing("2026-10")

    # then: the correction was not late (the disputed month stays open), and revision 2
    # supersedes revision 1 with the corrected total, 12% of 70,000.00
    assert not UsageRecord.objects.filter(event_id="c-1-fix", late=True).exists()
    old = licensor.get(_url(first)).json()
    revision = current()
    new = licensor.get(_url(revision)).json()
    assert old["status"] == "superseded"
    assert old["superseded_by"] == str(revision.pk)
    assert (new["status"], new["revision"], new["supersedes"]) == ("draft", 2, str(first.pk))
    assert new["total"] == "8400.00"
    assert old["total"] == "9036.00"

    # when: the licensor approves the revision
    approved = licensor.post(_url(revision, "approve"))

    # then: one accrual, of the revision's total; the superseded one never posted
    assert approved.status_code == 200, approved.content
    assert approved.json()["decided_by"] == "licensor:minimax"
    entries = JournalEntry.objects.filter(reference_type="settlement")
    assert [e.reference_id for e in entries] == [str(revision.pk)]
    assert party_balances(owner=revision.host) == {"USD": {"receivable": 840000}}
    assert trial_balance() == {"USD": 0}
    assert PeriodClose.objects.filter(period="2026-10").exists()
    call_command("verify_ledger", stdout=io.StringIO())
    call_command("run_billing", "--period", "2026-10", "--verify", stdout=io.StringIO())

    # and each settlement's history tells its part, to the licensor and to the host
    assert _history(licensor, first) == [
        ("system", "computed"),
        ("licensor:minimax", "disputed"),
        ("host:fireworks", "responded"),
        ("system", "superseded"),
    ]
    assert _history(host, revision) == [("system", "revised"), ("licensor:minimax", "approved")]
    events = licensor.get(_url(first, "history")).json()["results"]
    assert events[1]["detail"] == {
        "reason_code": "quantity_contested",
        "reason": "5,300.00 of c-1 was refunded",
        "lines": [commercial],
        "amount": "636.00",
    }
    assert events[2]["detail"] == {"message": "Right, fixing"}
    assert events[3]["detail"] == {"by": str(revision.pk)}


def test_it_leaves_a_dispute_with_nothing_changed_as_it_is_across_runs(
    world: dict[str, Any],
) -> None:
    # given
    licensor, first = world["licensor"], world["settlement"]
    licensor.post(_url(first, "dispute"), {"reason": "too high"}, format="json")

    # when: two runs with no new usage
    run_billing("2026-10")
    run_billing("2026-10")

    # then: still disputed, no revision, nothing posted; approval still possible
    first.refresh_from_db()
    assert first.status == "disputed"
    assert Settlement.objects.count() == 1
    assert not JournalEntry.objects.exists()
    assert licensor.post(_url(first, "approve")).status_code == 200
    assert JournalEntry.objects.filter(reference_type="settlement").count() == 1


def test_it_keeps_one_current_settlement_per_key_in_postgresql(world: dict[str, Any]) -> None:
    # given a current draft
    s = world["settlement"]

    # when another current settlement of the same key is inserted behind the code's back
    refused = pytest.raises(IntegrityError, match="billing_settlement_one_current")
    with refused, transaction.atomic():
        Settlement.objects.create(
            licensor=s.licensor,
            host=s.host,
            period=s.period,
            currency=s.currency,
            usage_digest="x",
            terms_digest="x",
            computed_at=s.computed_at,
        )


def test_it_keeps_the_history_append_only(world: dict[str, Any]) -> None:
    # given a disputed settlement's history
    s = world["settlement"]
    world["licensor"].post(_url(s, "dispute"), {"reason": "too high"}, format="json")
    event = SettlementEvent.objects.filter(settlement=s).last()
    assert event is not None

    # when / then: neither an update nor a delete passes PostgreSQL
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        SettlementEvent.objects.filter(pk=event.pk).update(actor="someone else")
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        SettlementEvent.objects.filter(pk=event.pk).delete()


def test_it_lets_the_host_answer_only_a_disputed_settlement(world: dict[str, Any]) -> None:
    # given a draft
    host, licensor, s = world["host"], world["licensor"], world["settlement"]

    # when the host answers before any dispute, the licensor tries to answer, then the dispute
    early = host.post(_url(s, "respond"), {"message": "hello"}, format="json")
    by_licensor = licensor.post(_url(s, "respond"), {"message": "hello"}, format="json")
    licensor.post(_url(s, "dispute"), {"reason": "too high"}, format="json")
    empty = host.post(_url(s, "respond"), {"message": ""}, format="json")

    # then
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "invalid_state"
    assert by_licensor.status_code == 403
    assert empty.status_code == 400
    assert set(empty.json()["error"]["fields"]) == {"message"}
    assert _history(licensor, s) == [("system", "computed"), ("licensor:minimax", "disputed")]


def test_it_forbids_a_host_to_approve_or_dispute(world: dict[str, Any]) -> None:
    # given
    host, s = world["host"], world["settlement"]

    # when
    approve = host.post(_url(s, "approve"))
    dispute = host.post(_url(s, "dispute"), {"reason": "mine"}, format="json")

    # then
    assert [approve.status_code, dispute.status_code] == [403, 403]
    s.refresh_from_db()
    assert s.status == "draft"


def test_it_refuses_a_dispute_of_a_disputed_settlement(world: dict[str, Any]) -> None:
    # given
    licensor, s = world["licensor"], world["settlement"]
    licensor.post(_url(s, "dispute"), {"reason": "too high"}, format="json")

    # when
    again = licensor.post(_url(s, "dispute"), {"reason": "still"}, format="json")

    # then
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_state"
    assert [a for _, a in _history(licensor, s)].count("disputed") == 1


def test_it_shows_line_ids_in_the_statement(world: dict[str, Any]) -> None:
    # given
    licensor, s = world["licensor"], world["settlement"]

    # when
    csv_text = licensor.get(_url(s, "statement.csv")).content.decode()

    # then: an `id` column after `position`, with each line's id
    header, *rows = [line.split(",") for line in csv_text.strip().split("\r\n")]
    assert header[6:8] == ["position", "id"]
    ids = {str(pk) for pk in s.lines.values_list("pk", flat=True)}
    assert {row[7] for row in rows} == ids


# --- bad dispute bodies: one rule each; 400 naming the field, nothing stored -----------------


def _refused(world: dict[str, Any], body: dict[str, Any], field: str) -> None:
    s = world["settlement"]
    response = world["licensor"].post(_url(s, "dispute"), body, format="json")
    assert response.status_code == 400, response.content
    assert set(response.json()["error"]["fields"]) == {field}
    s.refresh_from_db()
    assert s.status == "draft"
    assert not SettlementEvent.objects.filter(action="disputed").exists()


def test_it_refuses_a_dispute_without_a_reason(world: dict[str, Any]) -> None:
    _refused(world, {"reason_code": "other"}, "reason")


def test_it_refuses_a_blank_reason(world: dict[str, Any]) -> None:
    _refused(world, {"reason": "   "}, "reason")


def test_it_refuses_a_reason_over_5000_characters(world: dict[str, Any]) -> None:
    _refused(world, {"reason": "x" * 5001}, "reason")


def test_it_refuses_an_unknown_reason_code(world: dict[str, Any]) -> None:
    _refused(world, {"reason": "r", "reason_code": "too_expensive"}, "reason_code")


def test_it_refuses_a_line_of_another_settlement(world: dict[str, Any]) -> None:
    _refused(world, {"reason": "r", "lines": ["999999999"]}, "lines")


def test_it_refuses_lines_that_are_not_a_list(world: dict[str, Any]) -> None:
    _refused(world, {"reason": "r", "lines": "1"}, "lines")


def test_it_refuses_a_negative_amount(world: dict[str, Any]) -> None:
    _refused(world, {"reason": "r", "amount": "-1.00"}, "amount")


def test_it_refuses_an_amount_that_is_not_a_decimal(world: dict[str, Any]) -> None:
    _refused(world, {"reason": "r", "amount": "12,50"}, "amount")


def test_it_refuses_an_amount_as_a_json_number(world: dict[str, Any]) -> None:
    _refused(world, {"reason": "r", "amount": 12.5}, "amount")


def test_it_accepts_a_dispute_with_the_reason_alone(world: dict[str, Any]) -> None:
    # given / when
    s = world["settlement"]
    response = world["licensor"].post(_url(s, "dispute"), {"reason": "too high"}, format="json")

    # then: code `other`, no lines, no amount
    assert response.status_code == 200, response.content
    history = world["licensor"].get(_url(s, "history")).json()["results"]
    assert history[-1]["detail"] == {
        "reason_code": "other",
        "reason": "too high",
        "lines": [],
        "amount": None,
    }


def test_it_records_a_recomputation_only_when_the_draft_changed(
    world: dict[str, Any],
) -> None:
    # given a draft, computed once
    s = world["settlement"]

    # when: a run with nothing new, then one with more usage of the month
    run_billing("2026-10")
    post_usage(world["host"], [record("c-2", revenue="100.00")])
    run_billing("2026-10")

    # then: one "recomputed", with the new total (12% of 75,400.00); same id, revision 1
    events = list(s.events.values_list("actor", "action", "detail"))
    assert [(actor, action) for actor, action, _ in events] == [
        ("system", "computed"),
        ("system", "recomputed"),
    ]
    assert events[1][2]["total"] == "9048.00"
    assert current().pk == s.pk
