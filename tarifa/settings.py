"""Django settings for Tarifa, read from TARIFA_* environment variables.

Every variable is listed in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import os
import secrets

import dj_database_url

from tarifa.settings_env import metrics_dir, var_dir


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _env_float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


def _env_flag(name: str, default: bool) -> bool:
    """On unless set to 0, false or no (any case); `default` when unset."""
    value = _env(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no")


VAR_DIR = var_dir()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """Use TARIFA_SECRET_KEY, or one generated once and kept under ./var/ (never regenerated)."""
    configured = _env("TARIFA_SECRET_KEY")
    if configured:
        return configured
    path = VAR_DIR / "secret_key"
    try:
        # O_EXCL: when several processes start at once, exactly one writes the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        key = secrets.token_urlsafe(50)
        handle.write(key)
    return key


SECRET_KEY = _secret_key()
DEBUG = _env("TARIFA_DEBUG", "0") == "1"
ALLOWED_HOSTS = (_env("TARIFA_ALLOWED_HOSTS", "*") or "*").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "tarifa.core",
    "tarifa.tenants",
    "tarifa.runtime",
    "tarifa.events",
    "tarifa.metering",
    "tarifa.wallets",
    "tarifa.payments",
    "tarifa.alerts",
    "tarifa.ops",
]

MIDDLEWARE = [
    "tarifa.ops.middleware.RequestContextMiddleware",
    "tarifa.core.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tarifa.urls"
WSGI_APPLICATION = "tarifa.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = _env("TARIFA_DATABASE_URL", f"sqlite:///{VAR_DIR / 'tarifa.sqlite3'}")
_database = dj_database_url.parse(DATABASE_URL, conn_max_age=_env_int("TARIFA_DB_CONN_MAX_AGE", 60))
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["OPTIONS"] = {
        # WAL lets readers run beside the single writer; IMMEDIATE takes the write lock at
        # BEGIN so two writers queue on the busy timeout instead of failing to upgrade.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        "transaction_mode": "IMMEDIATE",
        "timeout": _env_float("TARIFA_SQLITE_BUSY_TIMEOUT", 30.0),
    }
    _database["CONN_MAX_AGE"] = 0 if _database["NAME"] == ":memory:" else _database["CONN_MAX_AGE"]
else:
    _database["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- Tarifa ---------------------------------------------------------------
TARIFA_BROKER_URL = _env("TARIFA_BROKER_URL")
TARIFA_REDIS_URL = _env("TARIFA_REDIS_URL")
TARIFA_LOG_LEVEL = (_env("TARIFA_LOG_LEVEL", "INFO") or "INFO").upper()
TARIFA_LOG_FORMAT = _env("TARIFA_LOG_FORMAT", "json")  # json | console
# Largest request body (Django's DATA_UPLOAD_MAX_MEMORY_SIZE): 5,000 usage records of ~2 KB each.
DATA_UPLOAD_MAX_MEMORY_SIZE = _env_int("TARIFA_API_MAX_BODY_BYTES", 10 * 1024 * 1024)
TARIFA_API_RATE_LIMIT = _env("TARIFA_API_RATE_LIMIT", "6000/minute")
TARIFA_JOB_LEASE_SECONDS = _env_float("TARIFA_JOB_LEASE_SECONDS", 60.0)
TARIFA_WORKER_POLL_SECONDS = _env_float("TARIFA_WORKER_POLL_SECONDS", 1.0)
TARIFA_WORKER_BATCH_SIZE = _env_int("TARIFA_WORKER_BATCH_SIZE", 100)
TARIFA_HEARTBEAT_SECONDS = _env_float("TARIFA_HEARTBEAT_SECONDS", 5.0)
TARIFA_WORKER_STALE_SECONDS = _env_float("TARIFA_WORKER_STALE_SECONDS", 60.0)
TARIFA_JOB_RETENTION_DAYS = _env_int("TARIFA_JOB_RETENTION_DAYS", 7)
TARIFA_WEBHOOK_TIMEOUT_SECONDS = _env_float("TARIFA_WEBHOOK_TIMEOUT_SECONDS", 10.0)
# Webhook endpoints and gateway base URLs on loopback, private or link-local addresses (refused
# unless set: see core.network).
TARIFA_PRIVATE_URLS = _env_flag("TARIFA_PRIVATE_URLS", False)
TARIFA_METRICS_DIR = metrics_dir()
# How far ahead of its arrival a usage record may be dated (clock skew); later is refused.
TARIFA_USAGE_FUTURE_HOURS = _env_float("TARIFA_USAGE_FUTURE_HOURS", 24.0)
# Largest `attributes` of a usage record, as compact JSON (they are stored on the usage table).
TARIFA_USAGE_ATTRIBUTES_MAX_BYTES = _env_int("TARIFA_USAGE_ATTRIBUTES_MAX_BYTES", 4096)
TARIFA_FOLD_BATCH_SIZE = _env_int("TARIFA_FOLD_BATCH_SIZE", 1000)
# On PostgreSQL, fold batches without tiers or short wallets with set-based SQL (services/set_folding.py).
TARIFA_FOLD_IN_SQL = _env_flag("TARIFA_FOLD_IN_SQL", True)
# On PostgreSQL, an API call charges its records into their summaries in its own transaction where
# an import chunk would (nothing of the summary waiting, no wallet, no tiers); calls touching the same
# summaries then take turns for that part. 0 leaves all API usage to the fold workers.
TARIFA_API_FOLD_IN_PLACE = _env_flag("TARIFA_API_FOLD_IN_PLACE", True)
# Records per transaction of a file import on PostgreSQL (staged, rated and folded in SQL). Each
# chunk rewrites the summaries it touches once, so bigger chunks cost less per record, and more memory.
TARIFA_IMPORT_CHUNK_SIZE = _env_int("TARIFA_IMPORT_CHUNK_SIZE", 50000)
# Database connections storing those chunks: one rates a chunk while another stores the one before.
TARIFA_IMPORT_CONNECTIONS = _env_int("TARIFA_IMPORT_CONNECTIONS", 2)
TARIFA_FOLD_SWEEP_CRON = _env("TARIFA_FOLD_SWEEP_CRON", "* * * * *")
# Monthly grants: every quarter hour at :05 UTC-wise, i.e. 00:05 on the 1st in every real time zone.
TARIFA_GRANT_CRON = _env("TARIFA_GRANT_CRON", "5,20,35,50 * * * *")
# Payment checks: how often due checks are looked for, how many a worker claims at once, how many
# gateway calls of a batch run at the same time, and how long a claimed check stays leased.
TARIFA_PAYMENT_CHECK_CRON = _env("TARIFA_PAYMENT_CHECK_CRON", "* * * * *")
TARIFA_PAYMENT_CHECK_BATCH = _env_int("TARIFA_PAYMENT_CHECK_BATCH", 100)
TARIFA_PAYMENT_CHECK_CONCURRENCY = _env_int("TARIFA_PAYMENT_CHECK_CONCURRENCY", 32)
TARIFA_PAYMENT_CHECK_LEASE_SECONDS = _env_int("TARIFA_PAYMENT_CHECK_LEASE_SECONDS", 120)
# X-Cron-Secret for POST /api/v1/cron/process-billing; empty disables the endpoint.
TARIFA_CRON_SECRET = _env("TARIFA_CRON_SECRET", "")
TARIFA_SUMMARY_EVENT_SECONDS = _env_float("TARIFA_SUMMARY_EVENT_SECONDS", 60.0)
TARIFA_BIND = _env("TARIFA_BIND", "127.0.0.1:8000")

LOGGING_CONFIG = None  # structlog is configured in tarifa.ops.logging
from tarifa.ops.logging import configure_logging  # noqa: E402

configure_logging(level=TARIFA_LOG_LEVEL, fmt=TARIFA_LOG_FORMAT or "json")
