from __future__ import annotations

from typing import Any

from django.apps import AppConfig


def _settlement_render(settlement: Any) -> dict[str, Any]:
    # Imported at the first event rendered, not at start-up: billing/api.py pulls in DRF and
    # drf-spectacular, which a command such as run_billing never needs (docs/performance.md).
    from billing import api

    return dict(api.SettlementOutput(settlement).data)


def _payout_render(payout: Any) -> dict[str, Any]:
    from billing import payouts_api

    return payouts_api.payout_render(payout)


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing import events

        # Webhook events carry the settlement and the payout as the API renders them
        # (billing/events.py).
        events.settlement_renderer = _settlement_render
        events.payout_renderer = _payout_render
