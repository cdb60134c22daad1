"""Serializer fields that render the API's text forms. Each is a subclass of the DRF field whose
schema it keeps (a string, a decimal), so the OpenAPI schema says what the answer holds."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework import serializers


class DecimalTextField(serializers.CharField):
    """A Decimal as plain text with all its stored places ("12.500000"; never "1E+1")."""

    def to_representation(self, value: Decimal) -> str:  # type: ignore[override]
        return format(value, "f")


class NormalizedDecimalField(serializers.DecimalField):
    """A Decimal as the catalog writes it: no trailing zeros ("10000", "0.5")."""

    def to_representation(self, value: Decimal) -> str:  # type: ignore[override]
        return format(value.normalize(), "f")


class BlankAsNullField(serializers.CharField):
    """Text stored as "" when absent (NOT NULL columns), answered as null."""

    def to_representation(self, value: Any) -> str | None:  # type: ignore[override]
        return None if value == "" else str(value)
