"""The guard of settlement lines (migration 0013: statement-level triggers over transition
tables): whatever client writes, and however many lines one statement writes, the lines of a
settlement that is not a draft are never inserted, updated or deleted; a draft's are."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from billing.bulk import values_copy
from billing.models import Settlement, SettlementEvent, SettlementLine
from licensing.models import Host, License, Licensor

COLUMNS = (
    "settlement_id, position, license_id, kind, model, customer_category, period,"
    " license_version, input_tokens, cached_input_tokens, output_tokens, requests, revenue,"
    " amount, description, flags"
)
COMPUTED_AT = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def line_values(settlement: Settlement, position: int, license_id: int) -> tuple[Any, ...]:
    """A line's values in the order of COLUMNS."""
    return (
        settlement.pk,
        position,
        license_id,
        "usage",
        "minimax-m2.7",
        "commercial",
        settlement.period,
        "2026-04-15",
        1000,
        0,
        500,
        10,
        Decimal("100.000000"),
        Decimal("12.0000"),
        "12% of net revenue",
        "[]",
    )


def copied(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows for `values_copy`, which encodes JSON fields itself: flags as a list."""
    return [(*row[:-1], []) for row in rows]


FIELDS = [c.strip() for c in COLUMNS.split(",")]


def sql_insert(settlement: Settlement, position: int, license_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO billing_settlementline ({COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            line_values(settlement, position, license_id),
        )


def psycopg_copy(rows: list[tuple[Any, ...]]) -> None:
    """COPY rows with psycopg's own cursor: no Django wrapper, psycopg's errors."""
    with connection.cursor() as cursor:
        raw: psycopg.Cursor[Any] = cursor.cursor
        with raw.copy(f"COPY billing_settlementline ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def lines_of(settlement: Settlement) -> list[tuple[int, Decimal]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT position, amount FROM billing_settlementline WHERE settlement_id = %s"
            " ORDER BY position",
            [settlement.pk],
        )
        return list(cursor.fetchall())


def set_status(settlement: Settlement, status: str) -> None:
    """A status the settlement guard allows from draft, by raw SQL (no side effects)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_settlement SET status = %s WHERE id = %s", [status, settlement.pk]
        )
    settlement.refresh_from_db()


def refused(settlement: Settlement, operation: str) -> Any:
    """The guard's error for `settlement` (its current status) and `operation`."""
    return pytest.raises(
        IntegrityError,
        match=f"settlement {settlement.pk} is {settlement.status}: its lines never change "
        rf"\({operation} refused\)",
    )


class World:
    def __init__(self, host: Host, licensor: Licensor, license_id: int) -> None:
        self.host = host
        self.licensor = licensor
        self.license_id = license_id
        self.months = 0

    def settlement(self, *, lines: int = 2, status: str = "draft") -> Settlement:
        """A new settlement of its own month with `lines` lines (positions 1..lines) written
        while it was a draft, then moved to `status`."""
        self.months += 1
        period = f"{2020 + self.months // 12}-{self.months % 12 + 1:02d}"
        settlement = Settlement.objects.create(
            licensor=self.licensor,
            host=self.host,
            period=period,
            currency="USD",
            total=Decimal("12.00") * lines,
            computed_at=COMPUTED_AT,
        )
        for position in range(1, lines + 1):
            sql_insert(settlement, position, self.license_id)
        if status != "draft":
            set_status(settlement, status)
        return settlement


@pytest.fixture
def world(minimax_world: tuple[Host, Licensor]) -> World:
    host, licensor = minimax_world
    return World(host, licensor, License.objects.get(slug="minimax-m27").pk)


SETTLED = ["approved", "disputed", "void"]


@pytest.mark.parametrize("status", SETTLED)
def test_it_refuses_an_insert_into_a_settled_settlement(world: World, status: str) -> None:
    # given
    settled = world.settlement(status=status)
    before = lines_of(settled)

    # when / then
    with refused(settled, "INSERT"), transaction.atomic():
        sql_insert(settled, 3, world.license_id)
    assert lines_of(settled) == before


@pytest.mark.parametrize("status", SETTLED)
def test_it_refuses_an_update_of_a_settled_settlements_lines(world: World, status: str) -> None:
    # given
    settled = world.settlement(status=status)
    before = lines_of(settled)

    # when / then: raw SQL and the ORM alike
    with refused(settled, "UPDATE"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_settlementline SET amount = amount + 1 WHERE settlement_id = %s",
            [settled.pk],
        )
    with refused(settled, "UPDATE"), transaction.atomic():
        SettlementLine.objects.filter(settlement=settled, position=2).update(amount="0.01")
    assert lines_of(settled) == before


@pytest.mark.parametrize("status", SETTLED)
def test_it_refuses_a_delete_of_a_settled_settlements_lines(world: World, status: str) -> None:
    # given
    settled = world.settlement(status=status)
    before = lines_of(settled)

    # when / then
    with refused(settled, "DELETE"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_settlementline WHERE settlement_id = %s", [settled.pk])
    with refused(settled, "DELETE"), transaction.atomic():
        SettlementLine.objects.filter(settlement=settled, position=1).delete()
    assert lines_of(settled) == before


@pytest.mark.parametrize("status", SETTLED)
def test_it_refuses_a_copy_into_a_settled_settlement(world: World, status: str) -> None:
    # given
    settled = world.settlement(status=status)
    before = lines_of(settled)

    # when / then: COPY FROM fires the statement's trigger like INSERT
    with (
        pytest.raises(psycopg.errors.RestrictViolation) as error,
        transaction.atomic(),
    ):
        psycopg_copy([line_values(settled, 3, world.license_id)])
    assert error.value.sqlstate == "23001"
    assert f"settlement {settled.pk} is {status}: its lines never change (INSERT refused)" in str(
        error.value
    )
    assert lines_of(settled) == before


def test_it_refuses_moving_a_line_from_a_draft_to_a_settled_settlement(world: World) -> None:
    # given
    draft = world.settlement()
    approved = world.settlement(status="approved")

    # when / then: the new parent is approved
    with refused(approved, "UPDATE"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_settlementline SET settlement_id = %s, position = 9"
            " WHERE settlement_id = %s AND position = 1",
            [approved.pk, draft.pk],
        )
    assert [p for p, _ in lines_of(draft)] == [1, 2]
    assert [p for p, _ in lines_of(approved)] == [1, 2]


def test_it_refuses_moving_a_line_from_a_settled_settlement_to_a_draft(world: World) -> None:
    # given
    draft = world.settlement()
    approved = world.settlement(status="approved")

    # when / then: the old parent is approved
    with refused(approved, "UPDATE"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_settlementline SET settlement_id = %s, position = 9"
            " WHERE settlement_id = %s AND position = 1",
            [draft.pk, approved.pk],
        )
    assert [p for p, _ in lines_of(draft)] == [1, 2]
    assert [p for p, _ in lines_of(approved)] == [1, 2]


def test_it_refuses_a_batch_with_one_line_of_a_settled_settlement_as_a_whole(
    world: World,
) -> None:
    # given: 40 drafts without lines, and an approved settlement
    drafts = [world.settlement(lines=0) for _ in range(40)]
    approved = world.settlement(status="approved")
    rows = [line_values(d, p, world.license_id) for d in drafts for p in (1, 2, 3, 4)]
    # one line of the approved settlement in the middle of the batch's 161
    rows.insert(97, line_values(approved, 3, world.license_id))

    # when / then: the billing run's COPY (billing/bulk.py) is refused, nothing is written
    with refused(approved, "INSERT"), transaction.atomic():
        values_copy(SettlementLine, FIELDS, copied(rows))
    assert SettlementLine.objects.filter(settlement__in=drafts).count() == 0
    assert [p for p, _ in lines_of(approved)] == [1, 2]

    # and one DELETE over the lines of a draft and of the approved one: refused as a whole
    draft = world.settlement()
    with refused(approved, "DELETE"), transaction.atomic():
        SettlementLine.objects.filter(settlement__in=[draft, approved]).delete()
    assert [p for p, _ in lines_of(draft)] == [1, 2]
    assert [p for p, _ in lines_of(approved)] == [1, 2]


def test_it_allows_every_write_of_a_drafts_lines(world: World) -> None:
    # given
    draft = world.settlement()
    other = world.settlement()

    # when: INSERT, COPY, UPDATE (also moving a line between drafts) and DELETE
    sql_insert(draft, 3, world.license_id)
    psycopg_copy([line_values(draft, p, world.license_id) for p in (4, 5)])
    values_copy(SettlementLine, FIELDS, copied([line_values(draft, 6, world.license_id)]))
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_settlementline SET amount = 1 WHERE settlement_id = %s", [draft.pk]
        )
        cursor.execute(
            "UPDATE billing_settlementline SET settlement_id = %s WHERE settlement_id = %s"
            " AND position = 6",
            [other.pk, draft.pk],
        )
        cursor.execute(
            "DELETE FROM billing_settlementline WHERE settlement_id = %s AND position = 2",
            [draft.pk],
        )

    # then
    assert lines_of(draft) == [(p, Decimal("1.0000")) for p in (1, 3, 4, 5)]
    assert [p for p, _ in lines_of(other)] == [1, 2, 6]


def test_it_deletes_a_draft_with_its_lines(world: World) -> None:
    # given: a draft with lines and history, as a run leaves one whose usage is gone
    draft = world.settlement(lines=4)
    SettlementEvent.objects.create(
        settlement=draft, at=COMPUTED_AT, actor="system", action="computed"
    )

    # when: Django's cascade (lines and events, then the settlement)
    draft.delete()

    # then
    assert not Settlement.objects.filter(pk=draft.pk).exists()
    assert SettlementLine.objects.filter(settlement_id=draft.pk).count() == 0


def test_it_lets_the_lines_of_a_deleted_settlement_go(world: World) -> None:
    # given: a draft deleted before its lines (the foreign key is checked at commit)
    draft = world.settlement(lines=3)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_settlement WHERE id = %s", [draft.pk])

        # when: its lines follow, in the same transaction (no parent row: it passes)
        cursor.execute("DELETE FROM billing_settlementline WHERE settlement_id = %s", [draft.pk])

        # then: gone, and the foreign keys hold
        assert cursor.rowcount == 3
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert lines_of(draft) == []
