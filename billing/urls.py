from django.urls import path

from billing import api, api_usage

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
]
