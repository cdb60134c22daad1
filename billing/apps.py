from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        from billing import api, events

        # Webhook events carry the settlement as the API renders it (billing/events.py).
        events.settlement_renderer = lambda s: dict(api.SettlementOutput(s).data)
