from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing import api, events, payouts_api

        # Webhook events carry the settlement and the payout as the API renders them
        # (billing/events.py).
        events.settlement_renderer = lambda s: dict(api.SettlementOutput(s).data)
        events.payout_renderer = payouts_api.payout_render
