"""The admin login form, with a lock-out: after TOLLGATE_ADMIN_LOGIN_FAILURE_RATE failed logins
from one client address, that address cannot log in, not even with the right password, until the
window has passed (docs/security.md, finding 10). Installed on the admin site by config/urls.py."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from licensing.auth import AdminLoginFailures


class LockoutAdminLoginForm(AdminAuthenticationForm):
    def clean(self) -> dict[str, Any]:
        failures = AdminLoginFailures()
        wait = failures.blocked(self.request)
        if wait is not None:
            raise ValidationError(
                "Too many failed logins from this address; try again in %(minutes)d minutes.",
                code="locked_out",
                params={"minutes": max(1, round(wait / 60))},
            )
        try:
            return super().clean()
        except ValidationError:
            failures.record(self.request)
            raise
