"""`GET /api/v1/settlements/{id}/kit`: the settlement's verification kit, streamed as a zip
(billing/kit.py; docs/verification.md). The settlement's licensor and host only; 404 for others.
`kit_response` is also the admin's kit download (billing/admin.py), so both stream the same kit."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from billing.api import _get_or_404, _settlement_output
from billing.kit import KIT_README, kit_plan, kit_stream
from billing.models import Settlement
from licensing.auth import ApiKeyThrottle, IsHostOrLicensor


def kit_response(s: Settlement) -> StreamingHttpResponse:
    """The kit of a settlement the caller may see (the caller checks that), as an attachment."""
    # Everything but the records is read now, so a failure is an error answer, not a
    # broken download; the records are read while the zip streams.
    plan = kit_plan(s)
    response = StreamingHttpResponse(
        kit_stream(plan, _settlement_output(s), KIT_README), content_type="application/zip"
    )
    filename = f"kit-{s.licensor.slug}-{s.host.slug}-{s.period}-{s.currency}.zip"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class SettlementKitApi(APIView):
    permission_classes = [IsHostOrLicensor]
    throttle_classes = [ApiKeyThrottle]

    @extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
    def get(self, request: Request, settlement_id: str) -> StreamingHttpResponse:
        return kit_response(_get_or_404(request, settlement_id))
