"""The estimate of a month so far: what a run would write now, without writing it."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from billing.estimates import settlement_estimates
from billing.models import Settlement
from licensing.models import Host, Licensor
from tests.billing.conftest import post_usage, record, run_billing, settlement_of

pytestmark = pytest.mark.django_db


def test_it_estimates_what_the_run_would_write_without_writing_it(
    minimax_world: tuple[Host, Licensor], client_for: Callable[..., APIClient]
) -> None:
    # given: October usage so far, commercial and individual
    host, _ = minimax_world
    client = client_for(host=host)
    post_usage(
        client,
        [
            record("e-1", revenue="75300.00"),
            record("e-2", revenue="4100.00", category="individual"),
        ],
    )

    # when: the month is estimated
    [estimate] = settlement_estimates(host=host, period="2026-10")

    # then: 12% of the commercial revenue (docs/rating.md, worked example 1), and no settlement
    # written
    assert (estimate.licensor, estimate.currency) == ("minimax", "USD")
    assert estimate.total == Decimal("9036.00")
    assert estimate.by_model_category == {
        ("minimax-m2.7", "commercial"): Decimal("9036.00"),
        ("minimax-m2.7", "individual"): Decimal("0.00"),
    }
    assert not Settlement.objects.exists()

    # and the run then writes exactly that
    run_billing("2026-10")
    assert settlement_of(licensor="minimax", host="fireworks", period="2026-10").total == (
        estimate.total
    )


def test_a_month_without_usage_has_no_estimate(minimax_world: tuple[Host, Licensor]) -> None:
    host, _ = minimax_world
    assert settlement_estimates(host=host, period="2026-09") == []
