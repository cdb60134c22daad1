"""Settlements in the admin, for licensors' reviewers and operators.

A staff user linked to a licensor (`licensing.LicensorMembership`) sees only that licensor's
settlements, everywhere: the list, a change page, the actions (another licensor's settlement is
simply not found). A superuser sees all. Settlements are read-only here: the only writes are
Approve and Dispute, which go through the same services as the API, and "Send invoice" (Stripe),
for operators only: it needs the `billing.send_invoice` permission (superusers have it) and is
never offered to a licensor's reviewer, whatever they were granted: the licensor does not invoice
the host, the platform does (docs/security.md).

The other billing admin pages have their own modules, imported below so that they register:
billing runs (`admin_runs.py`), Stripe events (`admin_stripe.py`), payouts (`payouts_admin.py`),
outbound webhooks (`admin_webhooks.py`) and email notifications (`admin_notifications.py`); who a
reviewer is lives in `admin_scope.py`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

# The other billing admin modules are imported for their `admin.register` (see above).
from billing import (  # noqa: F401
    admin_notifications,
    admin_runs,
    admin_stripe,
    admin_webhooks,
    payouts_admin,
    stripe_gateway,
)
from billing.admin_scope import licensor_scope, reviewer_licensor_id  # noqa: F401 - kept importable
from billing.errors import SettlementStateError
from billing.invoicing import settlement_invoice
from billing.models import (
    DISPUTE_REASON_CODES,
    Settlement,
    SettlementLine,
    SettlementStatus,
)
from billing.review import settlement_approve, settlement_dispute
from billing.site import LineModelFilter
from billing.workspace import line_usage, settlement_statement
from core.money import quantize


def _actor(request: HttpRequest) -> str:
    return f"admin:{request.user.get_username()}"


class SettlementLineInline(admin.TabularInline):
    model = SettlementLine
    extra = 0
    can_delete = False
    fields = [
        "position",
        "id",
        "kind",
        "model",
        "customer_category",
        "period",
        "license_version",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "requests",
        "revenue_display",
        "amount_display",
        "description",
        "flags",
    ]
    readonly_fields = [str(f) for f in fields]

    @admin.display(description="revenue")
    def revenue_display(self, obj: SettlementLine) -> str:
        return format(quantize(obj.revenue, obj.settlement.currency), "f")

    @admin.display(description="amount")
    def amount_display(self, obj: SettlementLine) -> str:
        return format(quantize(obj.amount, obj.settlement.currency), "f")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DisputeForm(forms.Form):
    """A dispute as the API takes it; `lines` offers the settlement's own lines (none in bulk)."""

    codes = [(c, c.replace("_", " ")) for c in DISPUTE_REASON_CODES]
    reason_code = forms.ChoiceField(choices=codes, initial="other", required=False)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        max_length=5000,
        help_text="What is wrong with this settlement; the host sees it.",
    )
    lines = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The lines you contest (optional).",
    )
    amount = forms.DecimalField(
        required=False,
        min_value=0,
        max_digits=24,
        decimal_places=4,
        help_text="The amount you contest, in the settlement's currency (optional).",
    )

    def __init__(self, *args: Any, lines: list[SettlementLine] = (), **kwargs: Any) -> None:  # type: ignore[assignment]
        super().__init__(*args, **kwargs)
        choices = [(str(ln.pk), f"id {ln.pk}: {ln}, {ln.amount:f}") for ln in lines]
        self.fields["lines"].choices = choices  # type: ignore[attr-defined]
        if not lines:
            del self.fields["lines"]

    def dispute_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "reason": data["reason"],
            "reason_code": data.get("reason_code") or "other",
            "lines": data.get("lines") or [],
            "amount": data.get("amount"),
        }


@admin.register(Settlement)
class SettlementAdmin(admin.ModelAdmin):
    list_display = [
        "period",
        "licensor",
        "host",
        "currency",
        "status",
        "total_display",
        "computed_at",
    ]
    # Every filter's choices come from get_queryset (the reviewer's own settlements): a plain
    # "host" filter would list every host of the platform, including those that deal only with
    # other licensors. Period and currency (AllValuesFieldListFilter) already read get_queryset.
    list_filter = [
        "period",
        ("host", admin.RelatedOnlyFieldListFilter),
        LineModelFilter,
        "status",
        "currency",
    ]
    list_select_related = ["licensor", "host"]
    search_fields = ["host__slug", "host__name", "id"]
    ordering = ["-period", "host__slug"]
    actions = ["approve_selected", "dispute_selected", "send_invoice_selected"]
    inlines = [SettlementLineInline]
    # The change page is a statement (billing/workspace.py): header, lines against the previous
    # month, downloads and a drill-down per line; the stock read-only fields stay below it.
    change_form_template = "admin/billing/settlement/statement.html"
    fields = [
        "id",
        "licensor",
        "host",
        "period",
        "currency",
        "status",
        "total_display",
        "usage_digest",
        "terms_digest",
        "record_count",
        "flags_display",
        "computed_at",
        "run",
        "approved_at",
        "disputed_at",
        "decided_by",
        "review_due_display",
        "revision_chain",
        "dispute_reason_code",
        "dispute_reason",
        "dispute_lines",
        "dispute_amount",
        "history_display",
        "stripe_invoice_id",
        "invoiced_at",
        "paid_at",
        "invoice_error",
    ]
    readonly_fields = [str(f) for f in fields]

    @admin.display(description="total", ordering="total")
    def total_display(self, obj: Settlement) -> str:
        return f"{obj.total_display} {obj.currency}"

    @admin.display(description="flags")
    def flags_display(self, obj: Settlement) -> str:
        """The engine's flags as sentences: unlicensed usage and attribution obligations."""
        if not obj.flags:
            return "none"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li><strong>{}</strong> {} {}: {} ({} records)</li>",
                (
                    (
                        f.get("kind", ""),
                        f.get("model") or "",
                        f.get("customer_category") or "",
                        f.get("message", ""),
                        f.get("record_count", ""),
                    )
                    for f in obj.flags
                ),
            ),
        )

    @admin.display(description="review due")
    def review_due_display(self, obj: Settlement) -> str:
        """When a draft is deemed accepted, and how many days the reviewer has left."""
        if obj.review_due_at is None:
            return "never (no review_days)"
        due = f"{obj.review_due_at:%Y-%m-%d %H:%M} UTC"
        if obj.status != SettlementStatus.DRAFT:
            return due
        days = (obj.review_due_at - timezone.now()).total_seconds() / 86400
        return f"{due} ({days:.1f} days left)" if days > 0 else f"{due} (past due)"

    @admin.display(description="revisions")
    def revision_chain(self, obj: Settlement) -> str:
        """Revision n, linked to the one it supersedes and the one that superseded it."""
        links = [("supersedes", obj.supersedes_id), ("superseded by", obj.superseded_by_pk)]
        return format_html(
            "revision {}{}",
            obj.revision,
            format_html_join(
                "",
                "; {} <a href='{}'>{}</a>",
                (
                    (what, reverse("admin:billing_settlement_change", args=[pk]), pk)
                    for what, pk in links
                    if pk
                ),
            ),
        )

    @admin.display(description="history")
    def history_display(self, obj: Settlement) -> str:
        """The settlement's events in time order: decisions, the host's answers, revisions."""
        return format_html(
            "<table id='settlement-history'><tr><th>at</th><th>actor</th><th>action</th>"
            "<th>detail</th></tr>{}</table>",
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        f"{e.at:%Y-%m-%d %H:%M:%S}",
                        e.actor,
                        e.action,
                        "; ".join(f"{k}: {v}" for k, v in e.detail.items()),
                    )
                    for e in obj.events.order_by("at", "id")
                ),
            ),
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Settlement]:
        qs = super().get_queryset(request).select_related("licensor", "host")
        return licensor_scope(request, qs)

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        # The statement shows the lines (formatted, against last month): not the inline too.
        return [i for i in super().get_inlines(request, obj) if i is not SettlementLineInline]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None:
            context["statement"] = settlement_statement(obj)
            context["statement_csv_url"] = reverse(
                "admin:billing_settlement_statement_csv", args=[obj.pk]
            )
            context["kit_url"] = reverse("admin:billing_settlement_kit", args=[obj.pk])
            context["title"] = "Settlement statement"
        return super().render_change_form(request, context, add, change, form_url, obj)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Every field is read-only: decisions go through Approve and Dispute, not Save.
        self._warn_of_mismatched_payments(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _warn_of_mismatched_payments(self, request: HttpRequest, object_id: str) -> None:
        """Operators only: a reviewer may not see Stripe events (another customer's ids)."""
        user = request.user
        if getattr(user, "licensor_membership", None) is not None:
            return
        if not user.has_perm("billing.view_stripeevent"):
            return
        settlement = self.get_object(request, object_id)
        if settlement is None:
            return
        count = settlement.stripe_events.exclude(mismatch="").count()
        if count:
            self.message_user(
                request,
                f"{count} signed Stripe payment event(s) did not match this settlement and were "
                "not posted: see Stripe events, filter “payment mismatch”.",
                messages.WARNING,
            )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # --- approve and dispute ----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<uuid:object_id>/approve/",
                self.admin_site.admin_view(self.approve_view),
                name="billing_settlement_approve",
            ),
            path(
                "<uuid:object_id>/dispute/",
                self.admin_site.admin_view(self.dispute_view),
                name="billing_settlement_dispute",
            ),
            *self._workspace_urls(),
        ]
        return own + super().get_urls()

    # --- the statement's downloads and drill-down (docs/workspace.md) ------------------------

    def _workspace_urls(self) -> list[URLPattern]:
        return [
            path(
                "<uuid:object_id>/statement.csv",
                self.admin_site.admin_view(self.statement_csv_view),
                name="billing_settlement_statement_csv",
            ),
            path(
                "<uuid:object_id>/kit.zip",
                self.admin_site.admin_view(self.kit_view),
                name="billing_settlement_kit",
            ),
            path(
                "<uuid:object_id>/lines/<int:line_id>/usage/",
                self.admin_site.admin_view(self.line_usage_view),
                name="billing_settlement_line_usage",
            ),
        ]

    def _viewable(self, request: HttpRequest, object_id: Any) -> Settlement:
        if not self.has_view_permission(request):
            raise PermissionDenied
        # Through get_queryset: another licensor's settlement is not found (404).
        return get_object_or_404(self.get_queryset(request), pk=object_id)

    def statement_csv_view(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        """The CSV of `GET /api/v1/settlements/{id}/statement.csv`, for the logged-in reviewer
        (the API wants a licensor's key; the admin has the session)."""
        # The API's modules are imported on the first download, not with the admin: they pull in
        # DRF and drf-spectacular, which no command needs at start-up (docs/performance.md).
        from billing.api import statement_csv

        s = self._viewable(request, object_id)
        response = HttpResponse(statement_csv(s), content_type="text/csv; charset=utf-8")
        filename = f"settlement-{s.licensor.slug}-{s.host.slug}-{s.period}-{s.currency}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    def kit_view(self, request: HttpRequest, object_id: Any) -> StreamingHttpResponse:
        """The verification kit of `GET /api/v1/settlements/{id}/kit`, streamed by the same code,
        for the logged-in reviewer (docs/verification.md)."""
        from billing.api_kit import kit_response  # as statement_csv_view's import

        return kit_response(self._viewable(request, object_id))

    def line_usage_view(self, request: HttpRequest, object_id: Any, line_id: int) -> HttpResponse:
        s = self._viewable(request, object_id)
        line = get_object_or_404(s.lines.all(), pk=line_id)  # another settlement's line: 404
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Usage behind line {line.position}: {line}",
            "settlement": s,
            "line": line,
            "usage": line_usage(s, line, page=request.GET.get("page", 1)),
            "change_url": self._change_url(s),
        }
        return TemplateResponse(request, "admin/billing/settlement/line_usage.html", context)

    def _decidable(self, request: HttpRequest, object_id: Any) -> Settlement:
        if not self.has_change_permission(request):
            raise PermissionDenied
        # Through get_queryset: another licensor's settlement is not found (404).
        return get_object_or_404(self.get_queryset(request), pk=object_id)

    def _change_url(self, settlement: Settlement) -> str:
        return reverse("admin:billing_settlement_change", args=[settlement.pk])

    def approve_view(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        return require_POST(self._approve)(request, object_id)

    def _approve(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        settlement = self._decidable(request, object_id)
        try:
            settlement_approve(settlement=settlement, actor=_actor(request))
        except SettlementStateError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, f"Approved settlement {settlement}.", messages.SUCCESS)
        return HttpResponseRedirect(self._change_url(settlement))

    def dispute_view(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        settlement = self._decidable(request, object_id)
        form = DisputeForm(request.POST or None, lines=list(settlement.lines.all()))
        if request.method == "POST" and form.is_valid():
            try:
                settlement_dispute(
                    settlement=settlement, actor=_actor(request), **form.dispute_fields()
                )
            except SettlementStateError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Disputed settlement {settlement}.", messages.SUCCESS)
            return HttpResponseRedirect(self._change_url(settlement))
        return self._dispute_page(request, [settlement], form, action=None)

    def _dispute_page(
        self,
        request: HttpRequest,
        settlements: list[Settlement],
        form: DisputeForm,
        *,
        action: str | None,
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Dispute settlements" if len(settlements) > 1 else "Dispute settlement",
            "settlements": settlements,
            "form": form,
            "action": action,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/billing/settlement/dispute.html", context)

    @admin.action(description="Approve selected settlements", permissions=["change"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> None:
        approved, refused = 0, []
        decidable = [SettlementStatus.DRAFT, SettlementStatus.DISPUTED]
        for settlement in queryset.filter(status__in=decidable):
            try:
                settlement_approve(settlement=settlement, actor=_actor(request))
                approved += 1
            except SettlementStateError as exc:
                refused.append(str(exc))
        skipped = queryset.exclude(status__in=decidable).count()
        self.message_user(request, f"Approved {approved} settlement(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected settlement(s) were neither drafts nor disputed.",
                messages.WARNING,
            )
        for text in refused:
            self.message_user(request, text, messages.ERROR)

    @admin.action(description="Dispute selected settlements…", permissions=["change"])
    def dispute_selected(
        self, request: HttpRequest, queryset: QuerySet[Settlement]
    ) -> HttpResponse | None:
        form = DisputeForm(request.POST if "reason" in request.POST else None)
        if form.is_bound and form.is_valid():
            disputed = 0
            for settlement in queryset.filter(status=SettlementStatus.DRAFT):
                try:
                    settlement_dispute(
                        settlement=settlement, actor=_actor(request), **form.dispute_fields()
                    )
                    disputed += 1
                except SettlementStateError as exc:
                    self.message_user(request, str(exc), messages.ERROR)
            self.message_user(request, f"Disputed {disputed} settlement(s).", messages.SUCCESS)
            return None
        # The intermediate page: the reason, then back to this action with the same selection.
        return self._dispute_page(request, list(queryset), form, action="dispute_selected")

    # --- Stripe invoicing -------------------------------------------------------------------

    def has_send_invoice_permission(self, request: HttpRequest) -> bool:
        """Operators only: a licensor's reviewer (a staff member linked to a licensor) never
        invoices, whatever permissions were granted to them."""
        user = request.user
        if getattr(user, "licensor_membership", None) is not None:
            return False
        return bool(user.is_active and user.is_staff and user.has_perm("billing.send_invoice"))

    @admin.action(
        description="Send invoice (Stripe) for selected settlements", permissions=["send_invoice"]
    )
    def send_invoice_selected(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> None:
        if not stripe_gateway.is_configured():
            self.message_user(request, "Stripe is not configured (STRIPE_API_KEY).", messages.ERROR)
            return
        sent, not_sent = [], []
        # Stripe is called per settlement, outside any transaction (the service refuses one).
        for settlement in queryset.filter(status=SettlementStatus.APPROVED):
            try:
                done = settlement_invoice(settlement=settlement)
            except SettlementStateError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            except Exception as exc:  # a Stripe error: shown, kept on the settlement, retryable
                self.message_user(request, f"{settlement}: {exc}", messages.ERROR)
            else:
                if done.stripe_invoice_id:
                    sent.append(done.stripe_invoice_id)
                else:
                    not_sent.append(str(done))
        if sent:
            self.message_user(
                request, f"Invoiced {len(sent)}: {', '.join(sent)}.", messages.SUCCESS
            )
        for text in not_sent:
            self.message_user(
                request, f"{text}: a total of zero or less is not invoiced.", messages.WARNING
            )
        skipped = queryset.exclude(status=SettlementStatus.APPROVED).count()
        if skipped:
            self.message_user(
                request, f"{skipped} selected settlement(s) were not approved.", messages.WARNING
            )
