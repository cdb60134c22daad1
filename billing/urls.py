from django.urls import path

from billing import api, api_usage, payouts_api

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
        "settlements/<str:settlement_id>/statement.csv",
        api.SettlementStatementApi.as_view(),
        name="settlement-statement",
    ),
    path("payouts", payouts_api.PayoutListApi.as_view(), name="payouts"),
    path("payouts/<str:payout_id>", payouts_api.PayoutDetailApi.as_view(), name="payout-detail"),
    path(
        "payouts/<str:payout_id>/statement.csv",
        payouts_api.PayoutStatementApi.as_view(),
        name="payout-statement",
    ),
]
