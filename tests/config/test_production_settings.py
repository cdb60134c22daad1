"""Production is the default (docs/security.md, finding 4): DEBUG is off unless turned on, the
process refuses to start with a missing or well-known secret, and `manage.py check --deploy` is
clean in the production settings. Each case starts a fresh process with a production
environment (the test process itself runs with the test settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "k3y-" + "".join(chr(0x41 + (i * 7) % 26) + str(i % 10) for i in range(40))
WEBHOOK_SECRET = "whsec_" + "9f8e7d6c5b4a" * 4

pytestmark = pytest.mark.slow


def _env(**overrides: str | None) -> dict[str, str]:
    """The test process's environment made production: no DEBUG, real-looking secrets, the
    plain settings module."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_KEY"}
        and not k.startswith("SECURE_")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        SECRET_KEY=SECRET,
        STRIPE_API_KEY="sk_test_x",
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        ALLOWED_HOSTS="tollgate.example",
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python manage.py ARGS`, or `python -c "import config.settings"` (what every process
    starts with: gunicorn, Celery, manage.py) when no ARGS are given."""
    command = ["manage.py", *args] if args else ["-c", "import config.settings"]
    return subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_in_production_settings() -> None:
    # given / when the deploy checks run with a production environment
    done = _run(_env(), "check", "--deploy", "--fail-level", "WARNING")

    # then no issue at all, warnings included
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def _settings(env: dict[str, str], names: str) -> list[str]:
    """The values of the named settings as a fresh process loads them."""
    code = f"import config.settings as s; print(*(repr(getattr(s, n)) for n in {names.split()!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_debug_is_off_unless_turned_on() -> None:
    # given / when the settings load with DEBUG unset, then with DEBUG=true
    names = "DEBUG SECURE_SSL_REDIRECT SESSION_COOKIE_SECURE"
    off = _settings(_env(), names)
    on = _settings(_env(DEBUG="true"), names)

    # then DEBUG is off (and HTTPS enforced) by default, on only when asked for
    assert off == ["False", "True", "True"]
    assert on == ["True", "False", "False"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY"),
        ({"SECRET_KEY": ""}, "SECRET_KEY"),
        ({"SECRET_KEY": "dev-only-not-secret-" + "x" * 40}, "SECRET_KEY"),
        ({"SECRET_KEY": "change-me-in-production-please-0123456789"}, "SECRET_KEY"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_local"}, "STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": None}, "STRIPE_WEBHOOK_SECRET"),
    ],
    ids=["missing", "empty", "dev", "compose", "short", "webhook-local", "webhook-missing"],
)
def test_it_refuses_to_start_with_a_missing_or_known_secret(
    overrides: dict[str, str | None], named: str
) -> None:
    # given / when a process starts with DEBUG off and that secret missing or well known
    done = _run(_env(**overrides))

    # then it exits non-zero naming the setting
    assert done.returncode != 0, done.stdout
    assert named in done.stderr
    assert "ImproperlyConfigured" in done.stderr


def test_a_known_secret_is_fine_with_debug_on() -> None:
    # given / when the demo's defaults with DEBUG turned on
    done = _run(_env(DEBUG="true", SECRET_KEY=None, STRIPE_WEBHOOK_SECRET=None))

    # then it starts
    assert done.returncode == 0, done.stderr


def test_no_stripe_needs_no_webhook_secret() -> None:
    # given / when production without Stripe at all (bank transfers only)
    done = _run(_env(STRIPE_API_KEY=None, STRIPE_WEBHOOK_SECRET=None))

    # then it starts (the webhook answers 503 "not configured")
    assert done.returncode == 0, done.stderr


def test_a_tls_terminating_proxy_is_trusted_only_when_configured() -> None:
    # given / when the settings load without and with SECURE_PROXY_SSL_HEADER
    plain = _settings(_env(), "SECURE_PROXY_SSL_HEADER")
    proxied = _settings(
        _env(SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto"), "SECURE_PROXY_SSL_HEADER"
    )

    # then the forwarded header counts only when the operator names it
    assert plain == ["None"]
    assert "".join(proxied) == "('HTTP_X_FORWARDED_PROTO','https')"
