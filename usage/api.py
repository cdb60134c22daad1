"""Usage endpoints for hosts: POST a batch, list own records, a month's summary.

Thin views: DRF does authentication (API key), the per-key throttle, content negotiation and the
schema; the body goes to `wire.decode_envelope` as raw bytes and the records to
`services.usage_batch_ingest` without a serializer per record.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApiError
from core.vocabulary import CUSTOMER_CATEGORIES
from licensing.auth import ApiKeyThrottle, IsHost
from licensing.fields import BlankAsNullField, DecimalTextField
from usage import selectors, services
from usage.columns import decode_valid
from usage.rejections import rejections_logged
from usage.wire import (
    MAX_BODY_BYTES,
    MAX_RECORDS,
    REQUESTS_MAX,
    TOKENS_MAX,
    EnvelopeError,
    decode_envelope,
)

# Batches stored per path ("fast" or "per_record", IngestResult.path) by this process, for
# POST /api/v1/usage and, apart, POST /api/v1/events: the only way to see from outside that a
# valid batch took the fast path, as the answers are the same either way
# (tests/usage/test_fast_path.py, tests/usage/test_events_fast_path.py).
BATCHES_BY_PATH: Counter[str] = Counter()
EVENT_BATCHES_BY_PATH: Counter[str] = Counter()

NDJSON = "application/x-ndjson"


class RawBody(bytes):
    """The request body as bytes (after gunzip), tagged with its media type."""

    media_type: str = "application/json"


def _too_large() -> ApiError:
    return ApiError(
        "payload_too_large",
        f"the body is larger than {MAX_BODY_BYTES:,} bytes; send at most {MAX_RECORDS:,}"
        " records per request",
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


def _gunzip(body: bytes) -> bytes:
    """Every member of a gzip body, inflated and joined (RFC 1952: a gzip file is a series of
    members; `cat a.gz b.gz` is one). Reading only the first member silently dropped the rest
    (docs/security.md, finding 9). At most MAX_BODY_BYTES in all (413); a corrupt or truncated
    member, or trailing bytes that are not a member, refuse the whole body (400)."""
    out: list[bytes] = []
    size = 0
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, MAX_BODY_BYTES + 1 - size)
        except zlib.error as exc:
            raise exceptions.ParseError(f"the gzip body is corrupt: {exc}") from None
        size += len(part)
        if size > MAX_BODY_BYTES or inflater.unconsumed_tail:
            raise _too_large()
        if not inflater.eof:
            raise exceptions.ParseError("the gzip body is truncated")
        out.append(part)
        rest = inflater.unused_data
        if not rest:
            return b"".join(out)


class _RawParser(parsers.BaseParser):
    """Hands the body to our decoder untouched: 10 MiB at most (413), gzip undone here with the
    same limit on the inflated size (a small gzip bomb is also a 413)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        request = (parser_context or {}).get("request")
        meta = request.META if request is not None else {}
        declared = meta.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _too_large()
        body = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
        encoding = meta.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding == "gzip":
            body = _gunzip(body)
        elif encoding not in ("", "identity"):
            raise ApiError(
                "unsupported_media_type",
                f"Content-Encoding {encoding!r} is not supported; use gzip or none",
                status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        raw = RawBody(body)
        raw.media_type = self.media_type
        return raw


class JsonBodyParser(_RawParser):
    media_type = "application/json"


class NdjsonBodyParser(_RawParser):
    media_type = NDJSON


class UsageRecordSerializer(serializers.Serializer):
    """One record as the host sends it (documentation of the wire format; not used to parse)."""

    event_id = serializers.RegexField(r"^[A-Za-z0-9._:\-]{1,128}$", max_length=128)
    model = serializers.CharField(max_length=200, help_text="a model slug or one of its aliases")
    occurred_at = serializers.DateTimeField(help_text="RFC 3339 with offset; ≤ 5 min ahead")
    customer_category = serializers.ChoiceField(choices=list(CUSTOMER_CATEGORIES))
    input_tokens = serializers.IntegerField(
        min_value=0, max_value=TOKENS_MAX, required=False, default=0
    )
    cached_input_tokens = serializers.IntegerField(
        min_value=0, max_value=TOKENS_MAX, required=False, default=0
    )
    output_tokens = serializers.IntegerField(
        min_value=0, max_value=TOKENS_MAX, required=False, default=0
    )
    requests = serializers.IntegerField(
        min_value=0, max_value=REQUESTS_MAX, required=False, default=1
    )
    revenue = serializers.RegexField(
        r"^-?[0-9]+(\.[0-9]{1,6})?$",
        required=False,
        default="0",
        help_text="decimal string, ≥ 0, below 10^12, at most 6 places (an integral JSON number is"
        " also taken)",
    )
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False, help_text="ISO 4217")
    region = serializers.RegexField(r"^[A-Z]{2}$", required=False, help_text="ISO 3166-1 alpha-2")
    customer_ref = serializers.CharField(max_length=128, required=False)
    corrects = serializers.RegexField(
        r"^[A-Za-z0-9._:\-]{1,128}$",
        required=False,
        help_text="event_id of an original record; numeric fields are then signed deltas",
    )


class UsageBatchSerializer(serializers.Serializer):
    records = UsageRecordSerializer(many=True, max_length=MAX_RECORDS)  # type: ignore[call-arg]


class ResultListSerializer(serializers.ListSerializer):
    """The fast path of `ResultSerializer(many=True)`: ingestion builds each result in its JSON
    form already (`usage.services`, `usage.wire.Rejection.as_result`), and a batch may answer
    10,000 of them, far slower through the fields (docs/performance.md, "API output").
    tests/usage/test_ingest_api.py holds both renderings equal."""

    def to_representation(self, data: Any) -> list[Any]:
        return list(data)


class ResultSerializer(serializers.Serializer):
    class Meta:
        list_serializer_class = ResultListSerializer

    index = serializers.IntegerField()
    event_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=["duplicate", "rejected"])
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text='field -> messages, each "<code>: <sentence>"; codes include conflict, '
        "currency_mismatch, unknown_model, in_future, negative_net",
    )


class IngestResponseSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    late = serializers.IntegerField(help_text="of the accepted, how many landed in settled periods")
    results = ResultSerializer(many=True)


class ErrorSerializer(serializers.Serializer):
    error = serializers.DictField()


class UsageRecordOutSerializer(serializers.Serializer):
    event_id = serializers.CharField()
    model = serializers.CharField()
    occurred_at = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    customer_category = serializers.CharField()
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    requests = serializers.IntegerField()
    revenue = DecimalTextField()
    currency = serializers.CharField()
    region = BlankAsNullField(allow_null=True)
    customer_ref = BlankAsNullField(allow_null=True)
    corrects = BlankAsNullField(allow_null=True)
    late = serializers.BooleanField()


class UsagePageSerializer(serializers.Serializer):
    next = serializers.CharField(allow_null=True)
    results = UsageRecordOutSerializer(many=True)


class UsageApi(APIView):
    permission_classes = [IsHost]
    throttle_classes = [ApiKeyThrottle]
    parser_classes = [JsonBodyParser, NdjsonBodyParser]

    @extend_schema(
        operation_id="usage_ingest",
        request={
            "application/json": UsageBatchSerializer,
            NDJSON: {"type": "string", "description": "one UsageRecord JSON object per line"},
        },
        responses={
            200: IngestResponseSerializer,
            400: ErrorSerializer,
            413: ErrorSerializer,
            415: ErrorSerializer,
            429: ErrorSerializer,
        },
        examples=[
            OpenApiExample(
                "a conflict",
                response_only=True,
                value={
                    "accepted": 1,
                    "duplicates": 0,
                    "rejected": 1,
                    "late": 0,
                    "results": [
                        {
                            "index": 1,
                            "event_id": "evt-1",
                            "status": "rejected",
                            "errors": {"event_id": ["conflict: a record with this event_id ..."]},
                        }
                    ],
                },
            )
        ],
        description="A batch of at most 10,000 usage records; each is stored exactly once. "
        "Content-Encoding: gzip accepted. See docs/ingestion.md.",
    )
    @rejections_logged("usage")
    def post(self, request: Request) -> Response:
        body: Any = request.data
        if not isinstance(body, RawBody):
            # DRF skips the parser for an empty body and hands over {}.
            media_type = (request.content_type or "").split(";")[0].strip()
            if media_type not in ("application/json", NDJSON):
                raise exceptions.UnsupportedMediaType(media_type or "(none)")
            body = RawBody(b"")
            body.media_type = media_type
        host = request.user.host  # type: ignore[union-attr]
        now = timezone.now()
        # The fast path takes a batch in which every record is valid (the common case); any
        # other batch goes the per-record way, which names each record's problems.
        valid = decode_valid(body, body.media_type, now=now)
        result = (
            services.usage_batch_ingest_valid(host=host, batch=valid, now=now)
            if valid is not None
            else None
        )
        if result is None:
            try:
                records = decode_envelope(bytes(body), body.media_type)
            except EnvelopeError as exc:
                raise ApiError("malformed", exc.message, fields=exc.fields) from None
            result = services.usage_batch_ingest(host=host, records=records, now=now)
        BATCHES_BY_PATH[result.path] += 1
        return Response(IngestResponseSerializer(result.as_response()).data)

    @extend_schema(
        operation_id="usage_list",
        parameters=[
            OpenApiParameter("model", str, description="model slug (or alias)"),
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="occurred_at ≥ from"),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="occurred_at < to"),
            OpenApiParameter("cursor", str, description="the `next` of the previous page"),
        ],
        responses={200: UsagePageSerializer, 400: ErrorSerializer},
    )
    def get(self, request: Request) -> Response:
        host = request.user.host  # type: ignore[union-attr]
        try:
            page = selectors.usage_page(
                host=host,
                model=request.query_params.get("model") or None,
                start=request.query_params.get("from") or None,
                end=request.query_params.get("to") or None,
                cursor=request.query_params.get("cursor") or None,
            )
        except selectors.QueryError as exc:
            raise ApiError("invalid", str(exc), fields={exc.field: [str(exc)]}) from None
        next_url = None
        if page.next_cursor:
            query = request.query_params.copy()
            query["cursor"] = page.next_cursor
            next_url = request.build_absolute_uri(request.path) + "?" + query.urlencode()
        return Response(UsagePageSerializer({"next": next_url, "results": page.rows}).data)
