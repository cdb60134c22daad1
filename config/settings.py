"""Tollgate settings: one file, driven by environment variables (README, "Configuration")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from celery.schedules import crontab

from config.email import email_settings
from config.logs import logging_config, structlog_configure
from core.periods import period_parse

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: str = "False") -> bool:
    return env(name, default).strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: str) -> int:
    return int(env(name, default))


# Production is the default: DEBUG only when turned on (`make demo`, the test settings). A
# debug page shows every setting, DATABASE_URL included (docs/security.md, finding 4).
DEBUG = envbool("DEBUG", "False")
DEV_SECRET_KEY = "dev-only-not-secret-" + "x" * 40
SECRET_KEY = env("SECRET_KEY") or (DEV_SECRET_KEY if DEBUG else "")
ALLOWED_HOSTS = [h for h in env("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# HTTPS (`manage.py check --deploy` is clean with DEBUG off; tests/config/
# test_production_settings.py runs it). Behind a proxy that terminates TLS, set
# SECURE_PROXY_SSL_HEADER to the header it sets (e.g. X-Forwarded-Proto) so that a request it
# received over https counts as secure; only then, since a client could send that header itself.
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", str(not DEBUG))
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]  # probes inside the network speak http
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000")  # 1 year
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "True")
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "True")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = envbool("SECURE_COOKIES", str(not DEBUG))
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + env("SECURE_PROXY_SSL_HEADER").upper().replace("-", "_"), "https")
    if env("SECURE_PROXY_SSL_HEADER")
    else None
)

INSTALLED_APPS = [
    "config.admin_apps.TollgateAdminConfig",  # django.contrib.admin with Tollgate's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "licensing",
    "ledger",
    "usage",
    "billing",
]

MIDDLEWARE = [
    # First: the request id is bound before anything logs (docs/operations.md, "Logs").
    "config.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Database: DATABASE_URL as is when set; otherwise the embedded PostgreSQL under .data/.
# One engine everywhere: there is no SQLite fallback.
DATABASES: dict[str, Any]
if env("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(env("DATABASE_URL"))}
else:
    from config.embedded_db import database_settings

    DATABASES = {"default": database_settings()}
DATABASES["default"].setdefault("OPTIONS", {})
# Persistent connections (seconds): a busy host's batches must not pay a connection each.
DATABASES["default"]["CONN_MAX_AGE"] = envint("DB_CONN_MAX_AGE", "60")
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# The cache holds the per-key throttle's counters: shared by every worker process when CACHE_URL
# names a Redis; per process otherwise (fine for one process, lenient with several).
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": env("CACHE_URL")}
        if env("CACHE_URL")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["licensing.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "licensing.schema.TollgateAutoSchema",  # documents the 4xx answers
    "EXCEPTION_HANDLER": "config.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["licensing.auth.ApiKeyThrottle"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_RATES": {
        # Per API key. A 10,000-record batch is one request, so 600/min is 100k records/s.
        "api_key": env("TOLLGATE_THROTTLE_RATE", "600/min"),
        # Per client address: failed API key authentications, failed admin logins
        # (licensing/auth.py; docs/security.md, finding 10).
        "auth_failure": env("TOLLGATE_AUTH_FAILURE_RATE", "20/min"),
        "admin_login_failure": env("TOLLGATE_ADMIN_LOGIN_FAILURE_RATE", "10/h"),
    },
    # The client address of the per-address counters: REMOTE_ADDR unless that many proxies
    # (which append to X-Forwarded-For) stand in front; 0 ignores X-Forwarded-For, which a
    # client can set to anything.
    "NUM_PROXIES": envint("TOLLGATE_NUM_PROXIES", "0"),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tollgate API",
    "DESCRIPTION": "Usage metering, license terms and settlements for open-weight AI models.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# Celery: a broker when CELERY_BROKER_URL is set; otherwise tasks run in-process (eager), so the
# embedded default needs no broker.
CELERY_BROKER_URL = env("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Celery's consumer with a repair: a lost broker connection no longer ends a worker that holds
# an unacknowledged message (config/worker.py).
CELERY_WORKER_CONSUMER = "config.worker:Consumer"
# On a lost broker connection, tasks running with acks_late are stopped and come back through
# Redis (the visibility timeout) rather than finishing and acknowledging on the lost connection,
# which ended the worker under Celery 5.7.0 (Celery 6's default; config/worker.py). Every task
# is idempotent: a batch stopped mid-way rolls back and is billed again.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis redelivers a task that was never acknowledged (its worker died) after this many seconds;
# it must exceed the longest task (one host/licensor pair of a billing run takes seconds).
# Each worker sweeps for such tasks every 10 s: kombu by default scans on one sweep in ten
# (every ~100 s), and a sweep lock left by a worker killed mid-sweep held off every sweep for
# 5 minutes; so a killed worker's task comes back about 10 s after its visibility timeout
# (tests/billing/test_celery_worker.py kills workers with these sweeps).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", "900"),
    "unacked_restore_interval": 10,
    "unacked_restore_throttle": 1,
    "unacked_mutex_expire": 60,
}
CELERY_TIMEZONE = "UTC"
# A running billing run with no pair finished for this long is taken for dead and marked failed
# (billing/stale.py); above the visibility timeout, after which a lost pair task is redelivered.
BILLING_RUN_STALE_SECONDS = envint("BILLING_RUN_STALE_SECONDS", "3600")
# A Celery run with no pair finished for this long has its pairs not done queued again (beat's
# reap, billing/stale.py): Redis can lose a task outright (a worker killed between taking it and
# recording it unacknowledged), not only deliver it late. Above the visibility timeout and its
# sweep, so a task that merely waits for redelivery is not queued twice; below the stale limit,
# so a run gets resumed (twice by default) before it is taken for dead.
BILLING_RUN_RESUME_SECONDS = envint("BILLING_RUN_RESUME_SECONDS", "1200")
# Pairs a billing run settles in one transaction (one Celery task, one durable commit): the
# per-pair round trips and WAL flush shared by the batch (docs/billing.md, "Batches"). 500
# rather than 100: at 10,000 pairs, ~30% less database CPU and ~15% less Python for the same
# rows (measured, docs/performance.md "Billing").
BILLING_PAIRS_PER_BATCH = envint("BILLING_PAIRS_PER_BATCH", "500")
# And at most this many of the run's groups a batch (past its first pair): what a batch holds in
# memory, ~2.5 KB a group, so ~25 MB, whatever the catalog's pairs look like (billing/runs.py
# `pairs_batches`).
BILLING_GROUPS_PER_BATCH = envint("BILLING_GROUPS_PER_BATCH", "10000")
# work_mem of the month's aggregation (its transaction only): enough for its hash table to fit
# (~300 bytes a group, per parallel process), so the planner hashes rather than sorts the month
# to disk; the server's default 4MB fits ~8,000 groups (docs/performance.md, "Billing").
BILLING_AGGREGATION_WORK_MEM = env("BILLING_AGGREGATION_WORK_MEM", "64MB")
CELERY_BEAT_SCHEDULE = {
    # The month's billing run: on the 1st at 02:00 UTC for the previous month.
    "monthly-billing": {
        "task": "billing.tasks.run_monthly_billing",
        "schedule": crontab(
            minute=env("BILLING_CRON_MINUTE", "0"),
            hour=env("BILLING_CRON_HOUR", "2"),
            day_of_month=env("BILLING_CRON_DAY", "1"),
        ),
    },
    # Approved settlements whose invoicing task was lost (no-op without STRIPE_API_KEY).
    "stripe-invoicing-sweep": {
        "task": "billing.tasks.invoice_pending_settlements",
        "schedule": crontab(minute="40"),
    },
    # Drafts past their review window are approved as deemed (billing/deeming.py).
    "deem-settlements": {
        "task": "billing.deeming.deem_settlements",
        "schedule": crontab(minute="20"),
    },
    # A run whose process died (a killed run_billing) is marked failed, not left running.
    "billing-runs-reap": {
        "task": "billing.tasks.reap_billing_runs",
        "schedule": crontab(minute="*/10"),
    },
    # Licensors' payouts (docs/payouts.md): on the 5th at 06:00 UTC, after the month's
    # billing run and the first days of host payments.
    "monthly-payouts": {
        "task": "billing.tasks.run_payouts",
        "schedule": crontab(
            minute="0",
            hour=env("PAYOUTS_CRON_HOUR", "6"),
            day_of_month=env("PAYOUTS_CRON_DAY", "5"),
        ),
    },
    # Usage partitions are created ahead of time so that no insert waits for DDL.
    "usage-partitions": {
        "task": "usage.tasks.ensure_usage_partitions",
        "schedule": crontab(minute="15", hour="1"),
    },
    # The rejections log keeps 30 days (usage/rejections.py).
    "usage-rejections-purge": {
        "task": "usage.tasks.purge_usage_rejections",
        "schedule": crontab(minute="25", hour="1"),
    },
    # Reviewers' reminders three days before deemed acceptance (docs/notifications.md), daily.
    "review-reminders": {
        "task": "billing.notifications.remind_reviewers",
        "schedule": crontab(minute="30", hour=env("REVIEW_REMINDER_HOUR", "7")),
    },
    # Notifications whose task was lost or gave up (SMTP down for hours).
    "notifications-sweep": {
        "task": "billing.notifications.send_pending_notifications",
        "schedule": crontab(minute="*/15"),
    },
    # Outbound webhook deliveries whose retry is due (docs/webhooks.md).
    "webhook-deliveries": {
        "task": "billing.tasks.deliver_due_webhooks",
        "schedule": crontab(minute="*"),
    },
}

# Stripe (billing/stripe_gateway.py is the only module that talks to it).
STRIPE_API_KEY = env("STRIPE_API_KEY")
STRIPE_API_BASE = env("STRIPE_API_BASE")
STRIPE_WEBHOOK_SECRET = env("STRIPE_WEBHOOK_SECRET")
# Days a host has to pay a Stripe invoice (collection_method send_invoice).
STRIPE_DAYS_UNTIL_DUE = envint("STRIPE_DAYS_UNTIL_DUE", "30")
# The client's retries of a failed request (same idempotency key). Unset: 2 against Stripe, 0
# against STRIPE_API_BASE (localstripe answers an unknown parameter with a 500 a retry would hide).
STRIPE_MAX_NETWORK_RETRIES = (
    envint("STRIPE_MAX_NETWORK_RETRIES", "0") if env("STRIPE_MAX_NETWORK_RETRIES") else None
)

# Outbound webhooks may go to http and to private or loopback addresses (tests, the demo);
# otherwise only https on a public address (docs/webhooks.md).
TOLLGATE_WEBHOOKS_ALLOW_PRIVATE = envbool("TOLLGATE_WEBHOOKS_ALLOW_PRIVATE")

# Outgoing email: the reviewers' notifications (docs/notifications.md). EMAIL_URL names the
# server (config/email.py); unset, messages are printed on stdout with DEBUG on (the demo) and go
# to an SMTP server on localhost:25 with it off, as Django's default does.
# Not kept as a setting: the URL may hold the server's password, which a debug page would show.
_email = email_settings(env("EMAIL_URL") or ("console://" if DEBUG else "smtp://localhost:25"))
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST", "localhost")
EMAIL_PORT = _email.get("EMAIL_PORT", 25)
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"]
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"]
EMAIL_USE_TLS = _email["EMAIL_USE_TLS"]
EMAIL_USE_SSL = _email["EMAIL_USE_SSL"]
EMAIL_TIMEOUT = _email["EMAIL_TIMEOUT"]
if "EMAIL_FILE_PATH" in _email:
    EMAIL_FILE_PATH = _email["EMAIL_FILE_PATH"]
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Tollgate <tollgate@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Where the links in notifications point: the admin's address as reviewers reach it.
TOLLGATE_BASE_URL = env("TOLLGATE_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

# The earliest month (YYYY-MM, UTC) usage may fall in: an older occurred_at is rejected
# (`too_old`), and no usage partition is created before it (docs/ingestion.md, "Partitions").
TOLLGATE_EARLIEST_PERIOD = env("TOLLGATE_EARLIEST_PERIOD", "2020-01")
period_parse(TOLLGATE_EARLIEST_PERIOD)  # a ValueError at start-up rather than at the first batch

# Secrets that must not run a production process: missing, or published in this repository
# (the dev key above, docker-compose.yml's old fallbacks). Checked at import, so the web
# server, the workers and every command refuse alike.
KNOWN_SECRETS = {
    DEV_SECRET_KEY,
    "change-me-in-production-please-0123456789",
    "whsec_local",
}
if not DEBUG:
    from django.core.exceptions import ImproperlyConfigured

    if SECRET_KEY in KNOWN_SECRETS or len(SECRET_KEY) < 50:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set to a random value of 50 characters or more when DEBUG is"
            " off (a missing or published key lets anyone forge sessions); for a development"
            " server set DEBUG=true"
        )
    # Without Stripe (STRIPE_API_KEY unset) the webhook answers 503 and needs no secret.
    if STRIPE_WEBHOOK_SECRET in KNOWN_SECRETS or (STRIPE_API_KEY and not STRIPE_WEBHOOK_SECRET):
        raise ImproperlyConfigured(
            "STRIPE_WEBHOOK_SECRET must be set to the endpoint's signing secret (whsec_...)"
            " when STRIPE_API_KEY is set and DEBUG is off; a missing or published one lets"
            " anyone mark settlements paid"
        )

# Platform fee taken on settlements, in percent of the settlement total (0 = none).
TOLLGATE_PLATFORM_FEE_PERCENT = env("TOLLGATE_PLATFORM_FEE_PERCENT", "0")

# Structured logs through structlog (config/logs.py): JSON lines with LOG_FORMAT=json (production),
# readable key=value lines otherwise.
LOG_FORMAT = env("LOG_FORMAT", "console")
LOGGING = logging_config(level=env("LOG_LEVEL", "INFO"), fmt=LOG_FORMAT)
structlog_configure()
