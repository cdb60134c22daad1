"""Tollgate's admin site: Django's, branded, whose home page is the licensor's workspace for a
licensor's reviewer (billing/workspace.py, docs/workspace.md). Operators keep the stock index,
with a link to the settlements that await review. Also the settlement admin's model filter.
Installed as the default site by `billing.apps.TollgateAdminConfig`, so every `admin.register`
lands here."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path
from django.utils import timezone

from billing.workspace import licensor_of, reviewer_home, reviewer_models
from billing.workspace_payouts import payouts_page


class TollgateAdminSite(admin.AdminSite):
    site_header = "Tollgate"
    site_title = "Tollgate"
    index_title = "Operations"
    index_template = "admin/tollgate/operator_index.html"

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        licensor_id = licensor_of(request.user)
        if licensor_id is None:
            return super().index(request, extra_context)
        membership: Any = getattr(request.user, "licensor_membership", None)
        context = {
            **self.each_context(request),
            "title": f"{membership.licensor.name}: your settlements",
            "subtitle": None,
            "home": reviewer_home(licensor_id=licensor_id, now=timezone.now()),
            "app_list": self.get_app_list(request),
            **(extra_context or {}),
        }
        request.current_app = self.name
        return TemplateResponse(request, "admin/tollgate/home.html", context)

    def get_urls(self) -> list[URLResolver | URLPattern]:
        own = [path("payouts/", self.admin_view(self.payouts_view), name="tollgate_payouts")]
        return own + super().get_urls()

    def payouts_view(self, request: HttpRequest) -> TemplateResponse:
        """The payouts page (docs/workspace.md): a reviewer's own licensor's payouts, or every
        licensor's for an operator who may view payouts."""
        licensor_id = licensor_of(request.user)
        if licensor_id is None and not request.user.has_perm("billing.view_payout"):
            raise PermissionDenied
        page = payouts_page(
            licensor_id=licensor_id,
            currency=request.GET.get("currency", "").strip().upper(),
            status=request.GET.get("status", "").strip(),
            page=request.GET.get("page", "1"),
        )
        if licensor_id is None:
            title = "Payouts: every licensor"
        else:
            membership: Any = getattr(request.user, "licensor_membership", None)
            title = f"{membership.licensor.name}: your payouts"
        context = {
            **self.each_context(request),
            "title": title,
            "subtitle": None,
            "payouts": page,
        }
        request.current_app = self.name
        return TemplateResponse(request, "admin/tollgate/payouts.html", context)


class LineModelFilter(admin.SimpleListFilter):
    """Settlements with a line of this model. The choices are the models on the lines of the
    settlements this user may see (get_queryset): never another licensor's models."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(m, m) for m in reviewer_models(model_admin.get_queryset(request))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(lines__model=self.value()).distinct()
        return queryset
