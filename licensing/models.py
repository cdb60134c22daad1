"""Who licenses what on which terms: licensors, hosts, models, licenses, versions, agreements,
and the API keys that hosts and licensors call us with.

Terms (a license version or a host agreement) are rated by `licensing.rating`; their `rules`
are validated against the grammar of docs/rating.md wherever they enter
(`licensing.catalog_validation` for imports, `TermsBase.clean` for the admin). A version that has
rated usage is locked (`locked_at`): billing sets it, and from then on nothing may change it; a
new version is added instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from core.vocabulary import CUSTOMER_CATEGORIES
from licensing.event_mapping import event_mapping_errors

CURRENCY_VALIDATOR = RegexValidator(r"^[A-Z]{3}$", "must be an ISO 4217 code such as USD")


class Licensor(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # How the platform pays the licensor (the catalog's `payout`, licensing/payout_terms.py,
    # docs/payouts.md). Percentages from 0 to 100; minimums in major units per currency.
    payout_rail = models.CharField(
        max_length=16,
        choices=[("manual", "manual (bank transfer)"), ("stripe_connect", "Stripe Connect")],
        default="manual",
    )
    payout_stripe_account = models.CharField(max_length=80, blank=True)
    payout_minimum = models.JSONField(default=dict, blank=True)  # {"USD": "100.00"}
    payout_withholding_percent = models.DecimalField(
        max_digits=9, decimal_places=6, default=0
    )
    # NULL: TOLLGATE_PLATFORM_FEE_PERCENT.
    payout_platform_fee_percent = models.DecimalField(
        max_digits=9, decimal_places=6, null=True, blank=True
    )

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(payout_rail__in=["manual", "stripe_connect"])
                & (~Q(payout_rail="stripe_connect") | ~Q(payout_stripe_account="")),
                name="licensing_licensor_payout_rail_valid",
            ),
            models.CheckConstraint(
                condition=Q(payout_withholding_percent__gte=0, payout_withholding_percent__lte=100)
                & (
                    Q(payout_platform_fee_percent__isnull=True)
                    | Q(payout_platform_fee_percent__gte=0, payout_platform_fee_percent__lte=100)
                ),
                name="licensing_licensor_payout_percents_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Host(models.Model):
    """A hosting partner: an inference cloud or API reseller that serves licensed models."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, validators=[CURRENCY_VALIDATOR])
    email = models.EmailField(blank=True)
    stripe_customer_id = models.CharField(max_length=64, blank=True)
    # What `POST /api/v1/events` fills in when an event does not say (licensing/event_mapping.py):
    # the category of its usage ("" = none: then an event must carry one through the mapping),
    # and record field -> path into the CloudEvent, merged over the LiteLLM defaults.
    default_customer_category = models.CharField(
        max_length=16, blank=True, choices=[(c, c) for c in CUSTOMER_CATEGORIES]
    )
    event_mapping = models.JSONField(
        default=dict,
        blank=True,
        help_text='record field -> path into the CloudEvent, e.g. {"revenue": "data.net"}; '
        "merged over the defaults (data.model, data.prompt_tokens, data.completion_tokens, "
        "data.cached_tokens, data.cost)",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = event_mapping_errors(self.event_mapping, "event_mapping")
        if errors:
            raise ValidationError({"event_mapping": errors})


class License(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="licenses")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class TermsBase(models.Model):
    """What a license version and a host agreement share: the terms that rate usage.

    Amounts are decimals in `currency` (major units, e.g. dollars), never floats.
    """

    kind: ClassVar[str]  # "version" | "agreement": what settlements and the API call them
    label = models.CharField(max_length=64)
    effective_from = models.DateTimeField()
    currency = models.CharField(max_length=3, validators=[CURRENCY_VALIDATOR])
    rules = models.JSONField(default=list)
    minimum_per_month = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    cap_per_month = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    attribution = models.CharField(max_length=500, blank=True)
    # Deemed acceptance: a draft these terms rated last is approved this many days after its first
    # computation (docs/billing.md); None: never.
    review_days = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    # Set by billing when usage was first rated under these terms; locked terms never change.
    locked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True

    @property
    def is_locked(self) -> bool:
        return self.locked_at is not None

    def clean(self) -> None:
        from licensing.rating import RulesError, parse_rules

        try:
            parse_rules(self.rules, "rules")
        except RulesError as exc:
            raise ValidationError({"rules": list(exc.errors)}) from exc

    def terms_dict(self) -> dict[str, Any]:
        """The catalog representation of these terms (docs/catalog.md)."""
        return {
            "effective_from": self.effective_from.isoformat().replace("+00:00", "Z"),
            "currency": self.currency,
            "rules": self.rules,
            "minimum_per_month": _dec(self.minimum_per_month),
            "cap_per_month": _dec(self.cap_per_month),
            "attribution": self.attribution or None,
        }


def _dec(value: Any) -> str | None:
    return None if value is None else format(value.normalize(), "f")


class LicenseVersion(TermsBase):
    """A public version of a license, in force from `effective_from` until the next one's."""

    kind = "version"
    license = models.ForeignKey(License, on_delete=models.PROTECT, related_name="versions")

    class Meta:
        ordering = ["license", "effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["license", "label"], name="version_label_unique"),
            models.UniqueConstraint(
                fields=["license", "effective_from"], name="version_effective_from_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.license.slug} {self.label}"


class Agreement(TermsBase):
    """A host-specific authorization: while in force it replaces the license's public version."""

    kind = "agreement"
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="agreements")
    license = models.ForeignKey(License, on_delete=models.PROTECT, related_name="agreements")

    class Meta:
        ordering = ["host", "license", "effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["host", "license", "label"], name="agreement_label_unique"
            ),
            models.UniqueConstraint(
                fields=["host", "license", "effective_from"],
                name="agreement_effective_from_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.host.slug} / {self.license.slug} {self.label}"


class LicensedModel(models.Model):
    """An open-weight model. A derivative (fine-tune, quantization) names a `parent` and no
    license: it is rated under its parent's license."""

    slug = models.CharField(max_length=128, unique=True)
    name = models.CharField(max_length=200, blank=True)
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="models")
    license = models.ForeignKey(
        License, on_delete=models.PROTECT, related_name="models", null=True, blank=True
    )
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, related_name="derivatives", null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "licensing_model"
        ordering = ["slug"]
        verbose_name = "model"
        constraints = [
            models.CheckConstraint(
                condition=Q(license__isnull=False) | Q(parent__isnull=False),
                name="model_has_license_or_parent",
            )
        ]

    def __str__(self) -> str:
        return self.slug

    def effective_license(self) -> License:
        """The license that rates this model: its own, or its nearest ancestor's."""
        model: LicensedModel | None = self
        seen: set[int] = set()
        while model is not None:
            if model.license_id is not None:
                return model.license  # type: ignore[return-value]
            if model.pk in seen:
                break
            seen.add(model.pk)
            model = model.parent
        raise ValueError(f"model {self.slug} has no license and no licensed parent")


class ModelAlias(models.Model):
    """Another name a host uses for a model (e.g. `MiniMaxAI/MiniMax-M2.7`); unique across all
    models, and never equal to another model's slug (checked on import)."""

    model = models.ForeignKey(LicensedModel, on_delete=models.CASCADE, related_name="aliases")
    alias = models.CharField(max_length=200, unique=True)

    class Meta:
        ordering = ["alias"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return self.alias


class ApiKey(models.Model):
    """An API key for a host or a licensor. Only a short prefix and the SHA-256 of the key are
    stored; the key itself is shown once, when it is created."""

    prefix = models.CharField(max_length=24, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)  # hex SHA-256 of the whole key
    host = models.ForeignKey(
        Host, on_delete=models.PROTECT, related_name="api_keys", null=True, blank=True
    )
    licensor = models.ForeignKey(
        Licensor, on_delete=models.PROTECT, related_name="api_keys", null=True, blank=True
    )
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=(Q(host__isnull=False) & Q(licensor__isnull=True))
                | (Q(host__isnull=True) & Q(licensor__isnull=False)),
                name="api_key_one_owner",
            )
        ]

    def __str__(self) -> str:
        return f"{self.prefix}…"

    @property
    def kind(self) -> str:
        return "host" if self.host_id else "licensor"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class LicensorMembership(models.Model):
    """Ties an admin user to the licensor they work for: such a user sees only that licensor's
    settlements in the admin."""

    user = models.OneToOneField(
        "auth.User", on_delete=models.CASCADE, related_name="licensor_membership"
    )
    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="members")

    def __str__(self) -> str:
        return f"{self.user} @ {self.licensor}"
