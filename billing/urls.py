from django.urls import path

from billing import api, api_kit, api_usage, api_webhooks, payouts_api

urlpatterns = [
    path("usage/summary", api_usage.UsageSummaryApi.as_view(), name="usage-summary"),
    path("settlements", api.SettlementListApi.as_view(), name="settlements"),
    path(
        "settlements/<str:settlement_id>",
        api.SettlementDetailApi.as_view(),
        name="settlement-detail",
    ),
    path(
        "settlements/<str:settlement_id>/approve",
        api.SettlementApproveApi.as_view(),
        name="settlement-approve",
    ),
    path(
        "settlements/<str:settlement_id>/dispute",
        api.SettlementDisputeApi.as_view(),
        name="settlement-dispute",
    ),
    path(
        "settlements/<str:settlement_id>/respond",
        api.SettlementRespondApi.as_view(),
        name="settlement-respond",
    ),
    path(
        "settlements/<str:settlement_id>/history",
        api.SettlementHistoryApi.as_view(),
        name="settlement-history",
    ),
    path(
        "settlements/<str:settlement_id>/statement.csv",
        api.SettlementStatementApi.as_view(),
        name="settlement-statement",
    ),
    path(
        "settlements/<str:settlement_id>/kit",
        api_kit.SettlementKitApi.as_view(),
        name="settlement-kit",
    ),
    path(
        "webhook-endpoints",
        api_webhooks.WebhookEndpointListApi.as_view(),
        name="webhook-endpoints",
    ),
    path(
        "webhook-endpoints/<str:endpoint_id>",
        api_webhooks.WebhookEndpointDetailApi.as_view(),
        name="webhook-endpoint-detail",
    ),
    path(
        "webhook-endpoints/<str:endpoint_id>/deliveries",
        api_webhooks.WebhookDeliveryListApi.as_view(),
        name="webhook-endpoint-deliveries",
    ),
    path("payouts", payouts_api.PayoutListApi.as_view(), name="payouts"),
    path("payouts/<str:payout_id>", payouts_api.PayoutDetailApi.as_view(), name="payout-detail"),
    path(
        "payouts/<str:payout_id>/statement.csv",
        payouts_api.PayoutStatementApi.as_view(),
        name="payout-statement",
    ),
]
