"""EMAIL_URL (config/email.py): one URL for the mail server, parsed by dj-email-url."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.email import email_settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "smtp://mailer:p%40ss@mail.example.com:2525",
            {
                "EMAIL_HOST": "mail.example.com",
                "EMAIL_PORT": 2525,
                "EMAIL_HOST_USER": "mailer",
                "EMAIL_HOST_PASSWORD": "p@ss",
                "EMAIL_USE_TLS": False,
                "EMAIL_USE_SSL": False,
            },
        ),
        (
            "smtp+tls://mailer:pw@mail.example.com",
            {
                "EMAIL_HOST": "mail.example.com",
                "EMAIL_PORT": 587,
                "EMAIL_USE_TLS": True,
                "EMAIL_USE_SSL": False,
            },
        ),
        (
            "smtp+ssl://mail.example.com:465",
            {"EMAIL_PORT": 465, "EMAIL_USE_SSL": True, "EMAIL_USE_TLS": False},
        ),
        ("smtp://mail.example.com?timeout=3", {"EMAIL_PORT": 25, "EMAIL_TIMEOUT": 3}),
    ],
)
def test_it_reads_an_smtp_url(url: str, expected: dict[str, object]) -> None:
    conf = email_settings(url)
    assert conf["EMAIL_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert {k: conf[k] for k in expected} == expected


def test_it_times_out_by_default_and_prints_on_the_console() -> None:
    assert email_settings("smtp://h")["EMAIL_TIMEOUT"] == 10
    conf = email_settings("console://")
    assert conf["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"
    assert "EMAIL_HOST" not in conf


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("smtp+starttls://h", "EMAIL_URL has an unknown scheme 'smtp+starttls'"),
        ("mail.example.com", "EMAIL_URL must look like smtp://host:port"),
        ("smtp://h:port", "EMAIL_URL is not a valid URL"),
    ],
)
def test_it_refuses_what_is_not_a_mail_url(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        email_settings(url)


def test_it_does_not_echo_a_password() -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        email_settings("smtpz://mailer:hunter2@h")
    assert "hunter2" not in str(refused.value)
