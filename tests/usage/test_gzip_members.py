"""A gzip body of several members (docs/security.md, finding 9): every member is inflated, or the
request is refused whole; never is part of a body accepted."""

from __future__ import annotations

import gzip
import json
from typing import Any

from tests.usage.conftest import record
from usage.models import UsageRecord
from usage.wire import MAX_BODY_BYTES


def _post_gzip(host_client: Any, body: bytes) -> Any:
    return host_client.post(
        "/api/v1/usage",
        data=body,
        content_type="application/x-ndjson",
        HTTP_CONTENT_ENCODING="gzip",
    )


def _line(event_id: str) -> bytes:
    return json.dumps(record(event_id)).encode() + b"\n"


def test_every_member_of_a_multi_member_gzip_body_is_read(catalog: Any, host_client: Any) -> None:
    # given an NDJSON body of three lines, each gzipped as its own member (what `cat a.gz b.gz`
    # or a streaming compressor that flushes per line produces)
    body = gzip.compress(_line("m1")) + gzip.compress(_line("m2")) + gzip.compress(_line("m3"))

    # when it is posted
    response = _post_gzip(host_client, body)

    # then all three records are stored, not only the first member's
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 3
    assert set(UsageRecord.objects.values_list("event_id", flat=True)) == {"m1", "m2", "m3"}


def test_trailing_bytes_after_the_last_member_refuse_the_body(
    catalog: Any, host_client: Any
) -> None:
    # given a gzip member followed by bytes that are not another member
    body = gzip.compress(_line("t1")) + b"not gzip at all"

    # when it is posted
    response = _post_gzip(host_client, body)

    # then the whole request is refused in the JSON error shape, nothing stored
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "malformed"
    assert UsageRecord.objects.count() == 0


def test_a_truncated_second_member_refuses_the_body(catalog: Any, host_client: Any) -> None:
    # given a whole first member and a cut second one
    body = gzip.compress(_line("u1")) + gzip.compress(_line("u2"))[:-6]

    # when / then it is refused, nothing stored
    response = _post_gzip(host_client, body)
    assert response.status_code == 400, response.content
    assert UsageRecord.objects.count() == 0


def test_the_size_limit_counts_every_member(catalog: Any, host_client: Any) -> None:
    # given two members that each inflate to 60% of the limit
    part = b" " * (MAX_BODY_BYTES * 6 // 10)
    body = gzip.compress(part) + gzip.compress(part)

    # when / then the inflated whole is over the limit: 413
    response = _post_gzip(host_client, body)
    assert response.status_code == 413, response.content
    assert response.json()["error"]["code"] == "payload_too_large"
