"""The digests of a rating (docs/rating.md, "Digests"): SHA-256 of canonical JSON.

`canonical_json` (json.dumps: sorted keys, no spaces, UTF-8) is the one definition of the bytes; the
other writers here produce the same bytes faster, for the billing run's thousands of ratings
(tests/rating/test_digest_bytes.py holds them byte-identical for any input).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from json.encoder import encode_basestring

from licensing.rating.rules import decimal_to_json
from licensing.rating.terms import Terms
from licensing.rating.usage import UsageGroup, WindowState

__all__ = ["canonical_json", "group_json", "terms_digest_of", "usage_digest_of"]


def canonical_json(value: object) -> bytes:
    """The canonical JSON every digest hashes: sorted keys, no spaces, UTF-8. The one definition;
    `group_json` and `usage_json` are faster writers of the same bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest_of(value: object) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


# Terms are few and rate many months (a run rates thousands of pairs under tens of terms): each
# terms object's canonical JSON is written once. Keyed by identity, not equality (two equal terms
# may hold values json writes differently), and holding the terms so that their id stays theirs.
_TERMS_JSON: dict[int, tuple[Terms, bytes]] = {}
_TERMS_JSON_MAX = 4096


def terms_json(t: Terms) -> bytes:
    hit = _TERMS_JSON.get(id(t))
    if hit is not None and hit[0] is t:
        return hit[1]
    canonical = canonical_json(t.to_json())
    if len(_TERMS_JSON) >= _TERMS_JSON_MAX:
        _TERMS_JSON.clear()
    _TERMS_JSON[id(t)] = (t, canonical)
    return canonical


def terms_digest_of(used: Sequence[Terms]) -> str:
    """`digest_of([t.to_json() for t in used])`: a JSON list is its items' JSON joined by commas."""
    canonical = b"[" + b",".join(terms_json(t) for t in used) + b"]"
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


_json_string = encode_basestring  # what json.dumps(ensure_ascii=False) writes strings with


def group_json(g: UsageGroup) -> bytes:
    """`canonical_json(g.to_json())`, written directly: the keys in sorted order, strings quoted by
    json's own encoder, integers as json writes them (tests/rating/test_digest_bytes.py holds
    the two equal for any group)."""
    region = "null" if g.region is None else _json_string(g.region)
    label = "null" if g.terms_label is None else _json_string(g.terms_label)
    return (
        f'{{"cached_input_tokens":{int.__repr__(g.cached_input_tokens)},'
        f'"customer_category":{_json_string(g.customer_category)},'
        f'"input_tokens":{int.__repr__(g.input_tokens)},'
        f'"model":{_json_string(g.model)},'
        f'"output_tokens":{int.__repr__(g.output_tokens)},'
        f'"record_count":{int.__repr__(g.record_count)},'
        f'"region":{region},'
        f'"requests":{int.__repr__(g.requests)},'
        f'"revenue":{_json_string(decimal_to_json(g.revenue))},'
        f'"revenue_before":{_json_string(decimal_to_json(g.revenue_before))},'
        f'"terms_label":{label},'
        f'"tokens_before":{int.__repr__(g.tokens_before)}}}'
    ).encode()


def usage_json(period: str, opening: WindowState, groups: Sequence[bytes]) -> bytes:
    """`canonical_json({"period", "window_state", "usage"})` of the groups' canonical forms, already
    in canonical order: the same bytes, each group serialised once."""
    return b"".join(
        (
            b'{"period":',
            canonical_json(period),
            b',"usage":[',
            b",".join(groups),
            b'],"window_state":',
            canonical_json(opening.to_json()),
            b"}",
        )
    )


def usage_digest_of(period: str, opening: WindowState, groups: Sequence[bytes]) -> str:
    """The digest of the usage rated: `groups` are the canonical forms of its groups, sorted."""
    return "sha256:" + hashlib.sha256(usage_json(period, opening, groups)).hexdigest()
