"""billing.bulk's writes against the ORM's: a row written by `NewRows` + `values_copy` is the row
`Model.objects.create` writes, and JSON goes through COPY as JSONField stores it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db import connection
from django.forms.models import model_to_dict

from billing.bulk import NewRows, values_copy
from billing.models import Settlement, SettlementEvent
from licensing.models import Host, Licensor

COMPUTED_AT = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
# Characters COPY's text format escapes, and some it does not, inside JSON strings.
AWKWARD = 'tab\there, line\nbreak, back\\slash, "quotes", ünïcödé, \\N'


def given(host: Host, licensor: Licensor, period: str) -> dict[str, Any]:
    return {
        "host_id": host.pk,
        "licensor_id": licensor.pk,
        "period": period,
        "currency": "USD",
        "total": Decimal("12.3400"),
        "usage_digest": "sha256:u",
        "terms_digest": "sha256:t",
        "record_count": 7,
        "flags": [{"kind": "unlicensed", "note": AWKWARD}],
        "computed_at": COMPUTED_AT,
    }


def stored(pk: Any) -> dict[str, Any]:
    """The settlement as the database holds it, without what differs by construction."""
    row = model_to_dict(Settlement.objects.get(pk=pk))
    return {k: v for k, v in row.items() if k not in ("id", "period", "created_at", "updated_at")}


def test_a_new_row_is_the_row_the_orm_writes(
    minimax_world: tuple[Host, Licensor],
) -> None:
    # given: the same values, once through the ORM and once as a COPY row
    host, licensor = minimax_world
    by_orm = Settlement.objects.create(**given(host, licensor, "2026-09"))
    new = NewRows(Settlement)
    now = dt.datetime.now(dt.UTC)
    row = new.row(now, given(host, licensor, "2026-10"))

    # when: the row is copied
    values_copy(Settlement, new.columns, [row])

    # then: the database holds the same settlement, defaults included (status, revision, the
    # dispute fields, payment_reference's db_default), with its own key and `now` as both
    # timestamps
    pk = row[new.columns.index("id")]
    assert pk != by_orm.pk
    assert stored(pk) == stored(by_orm.pk)
    copied = Settlement.objects.get(pk=pk)
    assert copied.created_at == copied.updated_at == now
    assert copied.flags == [{"kind": "unlicensed", "note": AWKWARD}]
    # and the model made from the row is the one read back, field by field
    made = new.instance(row)
    assert not made._state.adding
    assert model_to_dict(made) == model_to_dict(copied)


def test_each_new_row_gets_its_own_key_and_mutable_defaults(
    minimax_world: tuple[Host, Licensor],
) -> None:
    host, licensor = minimax_world
    new = NewRows(Settlement)
    values = {k: v for k, v in given(host, licensor, "2026-10").items() if k != "flags"}
    first = new.row(COMPUTED_AT, values)
    second = new.row(COMPUTED_AT, {**values, "period": "2026-11"})
    at = new.columns.index
    assert first[at("id")] != second[at("id")]
    assert first[at("flags")] == second[at("flags")] == []
    assert first[at("flags")] is not second[at("flags")]
    # auto_now fields are the instant given, whatever the values say (as save() sets them)
    later = new.row(COMPUTED_AT, {**values, "created_at": COMPUTED_AT - dt.timedelta(days=1)})
    assert later[at("created_at")] == COMPUTED_AT


def test_values_copy_stores_json_as_the_orm_does(minimax_world: tuple[Host, Licensor]) -> None:
    # given: one settlement, and an event detail with nested values and COPY's special characters
    host, licensor = minimax_world
    settlement = Settlement.objects.create(**given(host, licensor, "2026-10"))
    detail = {"total": "12.34", "note": AWKWARD, "nested": [1, None, {"a": True}]}
    by_orm = SettlementEvent.objects.create(
        settlement=settlement, at=COMPUTED_AT, actor="orm", action="computed", detail=detail
    )

    # when: the same event is copied
    values_copy(
        SettlementEvent,
        ("settlement_id", "at", "actor", "action", "detail"),
        [(settlement.pk, COMPUTED_AT, "copy", "computed", detail)],
    )

    # then: both hold the same JSON, byte for byte as jsonb prints it
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT actor, detail::text FROM billing_settlementevent WHERE settlement_id = %s"
            " ORDER BY actor",
            [settlement.pk],
        )
        (copy_actor, copy_json), (orm_actor, orm_json) = cursor.fetchall()
    assert (copy_actor, orm_actor) == ("copy", "orm")
    assert copy_json == orm_json
    assert SettlementEvent.objects.get(actor="copy").detail == by_orm.detail == detail
