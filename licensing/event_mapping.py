"""A host's `event_mapping`: which part of a CloudEvent fills which usage-record field
(`POST /api/v1/events`, docs/ingestion.md), and its `default_customer_category`.

Pure: the catalog import and the admin validate with `event_mapping_errors`; ingestion merges a
host's mapping over `DEFAULT_EVENT_MAPPING` with `event_mapping_effective`. The defaults read the
events of LiteLLM's `openmeter` callback (`data.model`, `data.prompt_tokens`, ...).
"""

from __future__ import annotations

import re
from typing import Any

from core.vocabulary import CUSTOMER_CATEGORIES

# The record fields a mapping may fill. event_id, occurred_at and customer_ref come from the
# event's `id`, `time` and `subject`; corrections are not sent as events.
MAPPABLE_FIELDS = (
    "model",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "requests",
    "revenue",
    "currency",
    "region",
    "customer_category",
)
DEFAULT_EVENT_MAPPING: dict[str, str] = {
    "model": "data.model",
    "input_tokens": "data.prompt_tokens",
    "output_tokens": "data.completion_tokens",
    "cached_input_tokens": "data.cached_tokens",
    "revenue": "data.cost",
}
MAX_DEPTH = 8  # names after `data`
# `data.<name>[.<name>...]`: a name is a JSON key without dots (what LiteLLM and the OpenMeter
# SDKs write), at most 64 characters.
PATH_RE = re.compile(r"data(?:\.[A-Za-z0-9_\-]{1,64}){1,%d}" % MAX_DEPTH)  # noqa: UP031


def event_mapping_errors(raw: Any, path: str) -> list[str]:
    """Every problem of a mapping as '<path>: <message>' (empty when valid)."""
    if not isinstance(raw, dict):
        return [f"{path}: must be an object of record field -> path"]
    errors = []
    for key, value in raw.items():
        where = f"{path}.{key}"
        if key not in MAPPABLE_FIELDS:
            errors.append(
                f"{where}: not a record field a mapping can fill (one of "
                + ", ".join(MAPPABLE_FIELDS)
                + ")"
            )
        elif not isinstance(value, str) or not PATH_RE.fullmatch(value):
            errors.append(
                f"{where}: must be a path data.<name>[.<name>...] into the event, "
                f"at most {MAX_DEPTH} names, e.g. data.prompt_tokens"
            )
    return errors


def default_customer_category_errors(raw: Any, path: str) -> list[str]:
    if raw is None or raw in CUSTOMER_CATEGORIES:
        return []
    return [f"{path}: must be one of " + ", ".join(CUSTOMER_CATEGORIES) + " or null"]


def event_mapping_effective(host_mapping: dict[str, str] | None) -> dict[str, tuple[str, ...]]:
    """The host's mapping merged over the defaults, key by key, each path split into the names
    below `data` (`"data.usage.cost"` -> `("usage", "cost")`)."""
    merged = {**DEFAULT_EVENT_MAPPING, **(host_mapping or {})}
    return {field: tuple(path.split(".")[1:]) for field, path in merged.items()}


# A catalog host's keys for events (docs/catalog.md). Absent from a host's entry: the stored value
# stays (an older catalog file does not wipe a mapping edited in the admin); null: cleared.
HOST_EVENT_KEYS = ("default_customer_category", "event_mapping")


def host_events_errors(raw: dict[str, Any], path: str) -> list[str]:
    errors = default_customer_category_errors(
        raw.get("default_customer_category"), f"{path}.default_customer_category"
    )
    if raw.get("event_mapping") is not None:
        errors += event_mapping_errors(raw["event_mapping"], f"{path}.event_mapping")
    return errors


def host_events_values(raw: dict[str, Any]) -> dict[str, Any]:
    """The Host field values of a valid catalog host entry, for the keys it has."""
    values: dict[str, Any] = {}
    if "default_customer_category" in raw:
        values["default_customer_category"] = raw["default_customer_category"] or ""
    if "event_mapping" in raw:
        values["event_mapping"] = raw["event_mapping"] or {}
    return values
