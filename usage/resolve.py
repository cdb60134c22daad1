"""The catalog side of ingestion: a batch's records resolved to model, license and licensor ids.

`Catalog` loads, once per batch and for the model names the batch uses, what validation needs
from the catalog (models and aliases, the effective license up the parent chain, the licensor,
the terms whose currency a record must carry); a handful of queries per batch, never one per
record. `Resolved` is a valid record with those ids and its content hash: one row of the staging
table that `usage.services` writes from. `Outcome` is what the write makes of a batch's
event_ids (docs/ingestion.md walks through the path).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from licensing.models import Agreement, Host, License, LicensedModel, LicenseVersion
from licensing.rating import terms_in_force
from usage.wire import Record

# The status of every event_id of a batch that was not simply accepted: ("duplicate", None),
# ("conflict", None) or ("rejected", (field, message)).
Outcome = dict[str, tuple[str, tuple[str, str] | None]]


@dataclass(slots=True)
class Resolved:
    """A valid record with its catalog ids and hash: what goes into the staging table."""

    record: Record
    model_id: int
    license_id: int
    licensor_id: int
    content_hash: bytes
    late: bool = False

    def row(self) -> tuple[Any, ...]:
        r = self.record
        return (
            r.event_id,
            self.model_id,
            self.license_id,
            self.licensor_id,
            r.occurred_at,
            r.customer_category,
            r.input_tokens,
            r.cached_input_tokens,
            r.output_tokens,
            r.requests,
            r.revenue,
            r.currency,
            r.region,
            r.customer_ref,
            r.corrects,
            self.late,
            self.content_hash,
        )


class Catalog:
    """What validation needs from the catalog, loaded once per batch for the names it uses."""

    def __init__(self, *, host: Host, names: set[str]) -> None:
        self.model_by_name: dict[str, int] = {}
        for model_id, slug in LicensedModel.objects.filter(slug__in=names).values_list(
            "id", "slug"
        ):
            self.model_by_name[slug] = model_id
        for model_id, alias in LicensedModel.objects.filter(aliases__alias__in=names).values_list(
            "id", "aliases__alias"
        ):
            self.model_by_name.setdefault(alias, model_id)
        # The effective license: walk parents. All models in one query (a catalog holds
        # hundreds, not millions); a derivative may sit several levels below its licensed root.
        tree = {
            m: (lic, parent)
            for m, lic, parent in LicensedModel.objects.values_list("id", "license_id", "parent_id")
        }
        self.license_by_model: dict[int, int] = {}
        for model_id in set(self.model_by_name.values()):
            node: int | None = model_id
            for _ in range(len(tree)):
                if node is None:
                    break
                license_id, parent = tree[node]
                if license_id is not None:
                    self.license_by_model[model_id] = license_id
                    break
                node = parent
        license_ids = set(self.license_by_model.values())
        self.licensor_by_license = dict(
            License.objects.filter(id__in=license_ids).values_list("id", "licensor_id")
        )
        # Versions of these licenses and the host's agreements (rows with label, effective_from
        # and currency) for licensing.rating.terms_in_force; and per license every instant at
        # which some terms take effect, sorted: between two of them the terms do not change.
        self.versions = self._terms(LicenseVersion.objects.filter(license_id__in=license_ids))
        self.agreements = self._terms(
            Agreement.objects.filter(license_id__in=license_ids, host=host)
        )
        self.boundaries: dict[int, list[datetime]] = defaultdict(list)
        for license_id, rows in (*self.versions.items(), *self.agreements.items()):
            self.boundaries[license_id] = sorted(
                [*self.boundaries[license_id], *(t.effective_from for t in rows)]
            )

    @staticmethod
    def _terms(queryset: Any) -> dict[int, list[Any]]:
        out: dict[int, list[Any]] = defaultdict(list)
        for row in queryset.values_list(
            "license_id", "label", "effective_from", "currency", named=True
        ):
            out[row.license_id].append(row)
        return out

    def terms_currency(self, license_id: int, at: datetime) -> str | None:
        """The currency of the terms that would rate usage at `at`; None if none is in force
        (such usage is accepted and flagged `unlicensed` by billing, not rejected here)."""
        terms = terms_in_force(self.versions[license_id], self.agreements[license_id], at)
        return None if terms is None else str(terms.currency)

    def terms_span(self, license_id: int, at: datetime) -> int:
        """Which of the license's spans between two `boundaries` holds `at`: records in the
        same span are rated by the same terms."""
        return bisect.bisect_right(self.boundaries[license_id], at)

    def terms_steady(self, license_id: int, start: datetime, end: datetime) -> bool:
        """True when no terms of the license take effect in (start, end]: the currency in force
        at `start` then holds for every moment up to `end`."""
        return self.terms_span(license_id, start) == self.terms_span(license_id, end)
