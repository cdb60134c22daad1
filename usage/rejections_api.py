"""`GET /api/v1/usage/rejections`: the host's records refused in the last 30 days, by either
ingest endpoint (usage.rejections), so a client that ignores answers still finds them."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApiError
from licensing.auth import ApiKeyThrottle, IsHost
from usage.api import ErrorSerializer
from usage.rejections import rejections_page
from usage.selectors import QueryError


class RejectionSerializer(serializers.Serializer):
    received_at = serializers.DateTimeField()
    endpoint = serializers.ChoiceField(choices=["usage", "events"])
    event_id = serializers.CharField(allow_null=True, help_text="null when it had no valid one")
    index = serializers.IntegerField(
        allow_null=True,
        help_text="its position in the request; null for a request refused whole",
    )
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text='field -> messages, each "<code>: <sentence>", as answered',
    )


class RejectionPageSerializer(serializers.Serializer):
    next = serializers.CharField(allow_null=True)
    results = RejectionSerializer(many=True)


class RejectionsApi(APIView):
    permission_classes = [IsHost]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(
        operation_id="usage_rejections_list",
        parameters=[
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="received_at ≥ since"),
            OpenApiParameter("cursor", str, description="the `next` of the previous page"),
        ],
        responses={200: RejectionPageSerializer, 400: ErrorSerializer},
        description="Records refused by POST /api/v1/usage or POST /api/v1/events in the last"
        " 30 days, oldest first, 100 a page.",
    )
    def get(self, request: Request) -> Response:
        host = request.user.host  # type: ignore[union-attr]
        try:
            page = rejections_page(
                host=host,
                since=request.query_params.get("since") or None,
                cursor=request.query_params.get("cursor") or None,
            )
        except QueryError as exc:
            raise ApiError("invalid", str(exc), fields={exc.field: [str(exc)]}) from None
        next_url = None
        if page.next_cursor:
            query = request.query_params.copy()
            query["cursor"] = page.next_cursor
            next_url = request.build_absolute_uri(request.path) + "?" + query.urlencode()
        return Response({"next": next_url, "results": page.rows})
