"""OpenAPI: how drf-spectacular documents our Bearer API keys and the errors each operation
answers."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from licensing.auth import IsHost, IsLicensor


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "licensing.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "tg_host_... (a host's key) or tg_lic_... (a licensor's key)",
            "description": "Issued by `manage.py create_api_key`; only its hash is stored.",
        }


class ErrorDetailOutput(serializers.Serializer):
    code = serializers.CharField(help_text="machine-readable, e.g. not_found, invalid_state")
    message = serializers.CharField()
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        help_text="field name -> its problems; empty when no field is at fault",
    )


class ErrorOutput(serializers.Serializer):
    """The one JSON shape of every API error: {"error": {"code", "message", "fields"}}."""

    error = ErrorDetailOutput()


class TollgateAutoSchema(AutoSchema):
    """drf-spectacular's schema, plus the 4xx answers each operation gives, with the error shape.

    They follow from what the view declares, so a new endpoint is documented without repeating
    them in every `extend_schema` (which may still name others, e.g. 413 and 415 of the usage
    endpoint): 401 for an operation behind an API key, 403 for one that takes one kind of key
    (host or licensor), 404 for an object in the path (another tenant's too), 400 for one with a
    body or query parameters, 409 for an action on an object (refused in its status), 429 under a
    throttle. schemathesis checks every answer against them (tests/test_schema_conformance.py)."""

    def error_statuses(self) -> dict[int, str]:
        view = self.view
        permissions = [type(p) for p in view.get_permissions()]
        has_path_object = "{" in self.path
        has_query = any(p.get("in") == "query" for p in self._get_parameters())
        statuses: dict[int, str] = {}
        if any(p is not AllowAny for p in permissions):
            statuses[401] = "No API key, or an unknown or revoked one."
        if any(p in (IsHost, IsLicensor) for p in permissions):
            statuses[403] = "The other kind of API key (a host's where a licensor's is needed)."
        if has_path_object:
            statuses[404] = "No such object of the caller's: another tenant's object is 404 too."
        has_body = self.method in ("POST", "PUT", "PATCH") and (
            self.get_request_serializer() is not None
        )
        if has_query or has_body:
            statuses[400] = "Invalid input: `error.fields` names each field at fault."
        if has_path_object and self.method == "POST":
            statuses[409] = "Not allowed in the object's status (code `invalid_state`)."
        if view.get_throttles():
            statuses[429] = "Too many requests for this API key: retry after `Retry-After` s."
        return statuses

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code, why in sorted(self.error_statuses().items()):
            if str(code) not in responses:
                body = self._get_response_for_code(ErrorOutput, str(code), direction=direction)
                responses[str(code)] = {**body, "description": why}
        return responses
