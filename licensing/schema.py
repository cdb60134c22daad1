"""OpenAPI: how drf-spectacular documents our Bearer API keys."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


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
