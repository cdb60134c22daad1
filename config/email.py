"""`EMAIL_URL`: the outgoing mail server as one URL, parsed by dj-email-url into Django's EMAIL_*
settings (README, "Configuration"; docs/notifications.md).

    smtp://user:pass@mail.example.com:25        plain SMTP (add ?tls=1 for STARTTLS, ?ssl=1 for TLS)
    smtp+tls://user:pass@mail.example.com:587   STARTTLS (dj-email-url's `submission://`)
    smtp+ssl://user:pass@mail.example.com:465   implicit TLS (`smtp://...?ssl=1`)
    console://                                  print every message on stdout (the demo)
    memory://  file:///var/mail/tollgate  dummy://

A user name or password with `@`, `:` or `/` in it is percent-encoded (`%40`, `%3A`, `%2F`).
"""

from __future__ import annotations

from typing import Any

import dj_email_url
from django.core.exceptions import ImproperlyConfigured

# Schemes this project adds to dj-email-url's, rewritten to what it understands.
_ALIASES = {"smtp+tls": ("submission", ""), "smtp+ssl": ("smtp", "ssl=1")}
DEFAULT_TIMEOUT = 10  # seconds: an SMTP server that hangs must not hold a Celery worker


def email_settings(url: str) -> dict[str, Any]:
    """Django's EMAIL_* settings of `url`; ImproperlyConfigured naming EMAIL_URL when it is not
    one (dj-email-url itself ignores an unknown scheme, and would leave Django's default)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ImproperlyConfigured("EMAIL_URL must look like smtp://host:port or console://")
    if scheme in _ALIASES:
        scheme, query = _ALIASES[scheme]
        if query:
            rest += ("&" if "?" in rest else "?") + query
    if scheme not in dj_email_url.SCHEMES or scheme == "smtps":
        known = sorted([*(s for s in dj_email_url.SCHEMES if s != "smtps"), *_ALIASES])
        raise ImproperlyConfigured(
            f"EMAIL_URL has an unknown scheme {url.partition('://')[0]!r}; use one of "
            + ", ".join(known)
        )
    try:
        conf: dict[str, Any] = dj_email_url.parse(f"{scheme}://{rest}")
    except ValueError as exc:  # a port that is not a number
        raise ImproperlyConfigured(f"EMAIL_URL is not a valid URL: {exc}") from None
    if conf.get("EMAIL_TIMEOUT") is None:
        conf["EMAIL_TIMEOUT"] = DEFAULT_TIMEOUT
    # Django wants strings here, not None.
    conf["EMAIL_HOST_USER"] = conf.get("EMAIL_HOST_USER") or ""
    conf["EMAIL_HOST_PASSWORD"] = conf.get("EMAIL_HOST_PASSWORD") or ""
    if not conf.get("EMAIL_HOST"):
        conf.pop("EMAIL_HOST", None)
    if not conf.get("EMAIL_PORT"):
        conf.pop("EMAIL_PORT", None)
    if not conf.get("EMAIL_FILE_PATH"):
        conf.pop("EMAIL_FILE_PATH", None)
    return conf


__all__ = ["email_settings"]
