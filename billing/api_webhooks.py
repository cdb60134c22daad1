"""Outbound webhook endpoints of a host or a licensor (docs/webhooks.md): create (the secret is
shown once), list, delete, and the deliveries of one. Another tenant's endpoint is 404."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.events import EVENT_TYPES, PAYOUT_EVENTS
from billing.webhook_delivery import url_problem
from billing.webhook_models import WebhookDelivery, WebhookEndpoint
from config.errors import ApiError
from licensing.auth import ApiKeyThrottle, IsHostOrLicensor, Principal

MAX_ENDPOINTS = 20  # per host or licensor


def _principal(request: Request) -> Principal:
    user = request.user
    assert isinstance(user, Principal)  # noqa: S101 - the permission classes guarantee it
    return user


def _own(principal: Principal) -> QuerySet[WebhookEndpoint]:
    if principal.host is not None:
        return WebhookEndpoint.objects.filter(host=principal.host)
    return WebhookEndpoint.objects.filter(licensor=principal.licensor)


def _get_or_404(request: Request, endpoint_id: str) -> WebhookEndpoint:
    try:
        pk = uuid.UUID(str(endpoint_id))
    except ValueError:
        pk = None
    endpoint = _own(_principal(request)).filter(pk=pk).first() if pk else None
    if endpoint is None:
        raise ApiError("not_found", "No such webhook endpoint.", status_code=404)
    return endpoint


class EndpointOutput(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES))
    created_at = serializers.DateTimeField()


class EndpointCreatedOutput(EndpointOutput):
    secret = serializers.CharField(help_text="Shown once: it signs every delivery.")


class EndpointListOutput(serializers.Serializer):
    results = EndpointOutput(many=True)


class DeliveryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    event_id = serializers.CharField(source="event.id")
    type = serializers.CharField(source="event.type")
    created = serializers.DateTimeField(source="event.created_at")
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.choices)
    attempts = serializers.IntegerField()
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    next_attempt_at = serializers.DateTimeField(allow_null=True, source="next_attempt_or_none")
    delivered_at = serializers.DateTimeField(allow_null=True)


class DeliveryListOutput(serializers.Serializer):
    results = DeliveryOutput(many=True)


class WebhookEndpointListApi(APIView):
    permission_classes = [IsHostOrLicensor]
    throttle_classes = [ApiKeyThrottle]

    class WebhookEndpointInput(serializers.Serializer):
        url = serializers.CharField(max_length=2000)
        events = serializers.ListField(
            child=serializers.ChoiceField(choices=EVENT_TYPES), min_length=1, max_length=50
        )

    @extend_schema(responses={200: EndpointListOutput})
    def get(self, request: Request) -> Response:
        rows = _own(_principal(request)).order_by("created_at")
        return Response(EndpointListOutput({"results": rows}).data)

    @extend_schema(request=WebhookEndpointInput, responses={201: EndpointCreatedOutput})
    def post(self, request: Request) -> Response:
        principal = _principal(request)
        data = self.WebhookEndpointInput(data=request.data)
        data.is_valid(raise_exception=True)
        url: str = data.validated_data["url"].strip()
        events = sorted(set(data.validated_data["events"]), key=EVENT_TYPES.index)
        problem = url_problem(url)
        if problem is not None:
            raise ApiError("invalid", f"url {problem}.", fields={"url": [problem]})
        if principal.host is not None and any(e in PAYOUT_EVENTS for e in events):
            message = "payout events are a licensor's; a host receives its settlements' events"
            raise ApiError("invalid", message, fields={"events": [message]})
        if _own(principal).count() >= MAX_ENDPOINTS:
            message = f"at most {MAX_ENDPOINTS} webhook endpoints"
            raise ApiError("invalid", message, fields={"url": [message]})
        endpoint = WebhookEndpoint.objects.create(
            host=principal.host, licensor=principal.licensor, url=url, events=events
        )
        return Response(EndpointCreatedOutput(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookEndpointDetailApi(APIView):
    permission_classes = [IsHostOrLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(responses={204: None})
    def delete(self, request: Request, endpoint_id: str) -> Response:
        _get_or_404(request, endpoint_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListApi(APIView):
    permission_classes = [IsHostOrLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(responses={200: DeliveryListOutput})
    def get(self, request: Request, endpoint_id: str) -> Response:
        endpoint = _get_or_404(request, endpoint_id)
        rows: Any = endpoint.deliveries.select_related("event").order_by("-id")[:100]
        return Response(DeliveryListOutput({"results": rows}).data)
