"""`POST /api/v1/events`: usage as CloudEvents, the format of OpenMeter's ingestion API, so
LiteLLM's `openmeter` callback and the OpenMeter SDKs can point at Tollgate (docs/ingestion.md).

Thin: the body (gzip and size limits as for `POST /api/v1/usage`) is decoded and mapped by
`usage.cloudevents`, and the mapped records take the usage ingest path as they are: the same
validation, duplicates, conflicts (across both endpoints: one event_id space per host) and answer.
As for `POST /api/v1/usage`, an all-valid batch takes the fast path (`usage.columns.ValidBatch`
into `services.usage_batch_ingest_valid`), any other the per-record path.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApiError
from licensing.auth import ApiKeyThrottle, IsHost
from usage import services
from usage.api import (
    EVENT_BATCHES_BY_PATH,
    ErrorSerializer,
    IngestResponseSerializer,
    JsonBodyParser,
    RawBody,
)
from usage.cloudevents import BATCH, MEDIA_TYPES, SINGLE, mapper_for
from usage.rejections import rejections_logged
from usage.wire import EnvelopeError


class CloudEventParser(JsonBodyParser):
    media_type = SINGLE


class CloudEventBatchParser(JsonBodyParser):
    media_type = BATCH


class CloudEventSerializer(serializers.Serializer):
    """One CloudEvent (documentation of the wire format; not used to parse). Other attributes
    (specversion, source, type, extensions) are accepted and ignored."""

    id = serializers.CharField(
        help_text="-> event_id; an id that is not 1-128 of A-Z a-z 0-9 . _ : - becomes"
        " ce-<hex SHA-256 of it>"
    )
    time = serializers.DateTimeField(help_text="-> occurred_at; RFC 3339 with offset; required")
    subject = serializers.CharField(required=False, help_text="-> customer_ref, ≤ 128")
    source = serializers.CharField(required=False)  # type: ignore[assignment]
    type = serializers.CharField(required=False)
    specversion = serializers.CharField(required=False)
    data = serializers.DictField(  # type: ignore[assignment]
        required=False,
        help_text="read through the host's event_mapping (docs/catalog.md); defaults: data.model,"
        " data.prompt_tokens, data.completion_tokens, data.cached_tokens, data.cost (revenue)."
        " JSON numbers are read from their decimal text, never as binary floats.",
    )


class EventsApi(APIView):
    permission_classes = [IsHost]
    throttle_classes = [ApiKeyThrottle]
    parser_classes = [CloudEventParser, CloudEventBatchParser, JsonBodyParser]

    @extend_schema(
        operation_id="events_ingest",
        request={
            SINGLE: CloudEventSerializer,
            BATCH: CloudEventSerializer(many=True),
            "application/json": CloudEventSerializer(many=True),
        },
        parameters=[
            OpenApiParameter(
                "Prefer",
                str,
                location=OpenApiParameter.HEADER,
                required=False,
                description="return=minimal: answer 204 without a body (what OpenMeter's SDKs"
                " expect); the outcome is the same, and rejections are listed by"
                " GET /api/v1/usage/rejections",
            )
        ],
        responses={
            202: IngestResponseSerializer,
            204: None,
            400: ErrorSerializer,
            413: ErrorSerializer,
            415: ErrorSerializer,
            429: ErrorSerializer,
        },
        examples=[
            OpenApiExample(
                "a LiteLLM event",
                request_only=True,
                media_type=SINGLE,
                value={
                    "specversion": "1.0",
                    "type": "litellm_tokens",
                    "id": "chatcmpl-7f3a",
                    "time": "2026-10-01T12:00:00Z",
                    "subject": "customer-42",
                    "source": "litellm-proxy",
                    "data": {
                        "model": "minimax-m2.7",
                        "cost": 0.00042,
                        "prompt_tokens": 1000,
                        "completion_tokens": 200,
                        "total_tokens": 1200,
                    },
                },
            )
        ],
        description="Usage as CloudEvents (one, or an array of at most 10,000); each becomes a"
        " usage record through the host's event_mapping and is stored exactly once, with the"
        " answer of POST /api/v1/usage (index = the event's position; errors name the event's"
        " field). Content-Encoding: gzip accepted. See docs/ingestion.md.",
    )
    @rejections_logged("events")
    def post(self, request: Request) -> Response:
        body: Any = request.data
        if not isinstance(body, RawBody):
            # DRF skips the parser for an empty body and hands over {}.
            media_type = (request.content_type or "").split(";")[0].strip()
            if media_type not in MEDIA_TYPES:
                raise exceptions.UnsupportedMediaType(media_type or "(none)")
            body = RawBody(b"")
            body.media_type = media_type
        host = request.user.host  # type: ignore[union-attr]
        now = timezone.now()
        mapper = mapper_for(host.event_mapping, host.default_customer_category)
        # The fast path takes a batch of plainly valid events, mapped column by column into what
        # POST /api/v1/usage's fast path decodes; any other batch is mapped event by event and
        # goes the per-record way, which names each event's problems.
        valid = mapper.decode_valid(bytes(body), body.media_type, now=now)
        result = (
            services.usage_batch_ingest_valid(host=host, batch=valid, now=now)
            if valid is not None
            else None
        )
        if result is not None and valid is not None:
            answer = mapper.answer_valid(result.as_response())
        else:
            try:
                events = mapper.decode(bytes(body), body.media_type)
            except EnvelopeError as exc:
                raise ApiError("malformed", exc.message, fields=exc.fields) from None
            mapped = mapper.map(events, now=now, host_currency=host.currency)
            result = services.usage_batch_ingest(host=host, records=mapped.records, now=now)
            answer = mapped.response(result.as_response())
        EVENT_BATCHES_BY_PATH[result.path] += 1
        if "return=minimal" in request.headers.get("Prefer", ""):
            minimal = Response(status=status.HTTP_204_NO_CONTENT)
            minimal.ingest_results = answer["results"]  # type: ignore[attr-defined]
            return minimal
        return Response(answer, status=status.HTTP_202_ACCEPTED)
