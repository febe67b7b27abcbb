"""Settings, read from the environment.

Every knob an operator may turn is an environment variable; the defaults give the zero-setup
quick start (SQLite, Redis on 127.0.0.1, this machine as the only hypervisor host).
"""

import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env_numbers import env_float, env_int
from .logs import configure_structlog, log_format, logging_config
from .private_files import make_private_dir, make_private_sqlite_file, write_private_file
from .redis_urls import celery_broker_url
from .security_headers import add_static_file_headers

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VDI_VAR_DIR", BASE_DIR / "var"))
make_private_dir(VAR_DIR)  # the database, the secret key, logs: see config/private_files.py


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name, default=""):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def load_secret_key():
    """DJANGO_SECRET_KEY, or a key generated once and kept in var/ (never a constant in git)."""
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        import secrets

        write_private_file(key_file, secrets.token_urlsafe(50))
    return key_file.read_text().strip()


SECRET_KEY = load_secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "broker",
    "portal",
    # Multi-factor login (identity/mfa/): TOTP apps and single-use recovery codes; passkeys are
    # identity.PasskeyDevice, a django-otp device of ours over py_webauthn. Before identity: its
    # admin replaces django-otp's device pages (which show the keys).
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "identity",
    "api",
    "dashboard",
    "django_structlog",
    "config.apps.RequestLogsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): the session passed a second factor (django-otp); staff must have.
    "django_otp.middleware.OTPMiddleware",
    "identity.mfa.policy.StaffNeedsSecondFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.security_headers.SecurityHeadersMiddleware",
    # After the login middleware: binds the request id (and user id) every log line carries.
    "django_structlog.middlewares.RequestMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'vdi.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
# PostgreSQL connection pool per process (psycopg_pool), so that a console's checks do not open
# a new connection each (several ms of every console open). Off by default because a pool
# must not cross a fork (Celery's prefork workers); config/serve.py turns it on for the
# ASGI processes (portal and gateway tier).
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 0)
if DATABASES["default"]["ENGINE"].endswith("postgresql") and DATABASE_POOL_MAX_SIZE > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them instead
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": DATABASE_POOL_MAX_SIZE,
        # How long a request waits for a connection: in a burst, or while PostgreSQL is away
        # (then it gets the 503 page after this long: config/unavailable.py).
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 20.0, positive=True)}
# An ASGI process's pooled connections, shared out so that nothing waits for the pool (under a
# logon storm requests held every connection and consoles waited up to the pool's timeout):
# at most PORTAL_REQUEST_SLOTS HTTP requests at once (config/http_handler.py; the others wait in
# the event loop, holding nothing) and PORTAL_DATABASE_THREADS threads for the websockets'
# database work (broker/database_threads.py): a third of the pool's connections for the threads,
# the rest for requests (16 and 8 of config/serve.py's 24). Without a pool: 16 requests, 8 threads.
if DATABASE_POOL_MAX_SIZE > 0:
    PORTAL_DATABASE_THREADS = max(1, DATABASE_POOL_MAX_SIZE // 3)
    PORTAL_REQUEST_SLOTS = max(1, DATABASE_POOL_MAX_SIZE - PORTAL_DATABASE_THREADS)
else:
    PORTAL_REQUEST_SLOTS, PORTAL_DATABASE_THREADS = 16, 8
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web, worker and gateway share the file: wait for a lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Take the write lock when a transaction starts: a deferred transaction that read first
    # fails at once ("database is locked") when it then tries to write beside another writer.
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # Write-ahead log: readers (portal pages, console re-checks) never wait for the writer, and
    # a commit appends to the log without an fsync of its own (synchronous=NORMAL; a power cut
    # may lose the last commits, never corrupt the file). Halves the console open time here.
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    # A file, not memory, so the test suite's uvicorn and Celery processes share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    if DATABASES["default"]["NAME"] not in ("", ":memory:") and Path(DATABASES["default"]["NAME"]).parent.is_dir():
        make_private_sqlite_file(Path(DATABASES["default"]["NAME"]))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Forms only, never uploads: larger bodies are refused before Django reads them
# (config/request_limits.py), so a client cannot make the portal spool gigabytes to disk.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("VDI_MAX_REQUEST_BODY_BYTES", 1024 * 1024, minimum=1024)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
# LDAP (django-auth-ldap) and login throttling, from AUTH_LDAP_* and VDI_LOGIN_* variables.
from .ldap import *  # noqa: E402,F401,F403
# OpenID Connect single sign-on (mozilla-django-oidc), from VDI_OIDC_* variables.
from .oidc import *  # noqa: E402,F401,F403

# Locked-out accounts and addresses are refused before any password check; then the directory
# (when AUTH_LDAP_SERVER_URI is set); then local accounts (admins, break-glass).
AUTHENTICATION_BACKENDS = [
    "identity.backends.LoginThrottleBackend",
    *(["identity.backends.DirectoryBackend"] if LDAP_ENABLED else []),  # noqa: F405
    *(["identity.oidc.backend.OidcBackend"] if OIDC_ENABLED else []),  # noqa: F405
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "portal:login"
# Multi-factor login (identity/mfa/): the name authenticator apps and passkeys show; the WebAuthn
# relying party id (default: the host name the browser used); seconds between the password and
# the second step before the password must be typed again.
OTP_TOTP_ISSUER = os.environ.get("VDI_MFA_ISSUER", "VDI portal")
VDI_MFA_ISSUER = OTP_TOTP_ISSUER
VDI_WEBAUTHN_RP_ID = os.environ.get("VDI_WEBAUTHN_RP_ID", "")
VDI_MFA_STEP_SECONDS = env_int("VDI_MFA_STEP_SECONDS", 300, positive=True)

# Django's database sessions, two round trips fewer per login (identity/session_store.py).
SESSION_ENGINE = "identity.session_store"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("VDI_HTTPS", False)
CSRF_COOKIE_SECURE = env_bool("VDI_HTTPS", False)

LANGUAGE_CODE = "en-us"
# The site's time zone: how the admin shows times, and the clock pools' capacity schedules follow.
TIME_ZONE = os.environ.get("VDI_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
# noVNC and spice-html5 come from npm (`make setup`), served as plain ES modules: only the
# directories the console page imports (static/portal/console.js), not the packages' demo
# pages (spice_auto.html would be a console client of its own on the portal's origin).
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/novnc/core", BASE_DIR / "node_modules/@novnc/novnc/core"),
    ("vendor/novnc/vendor", BASE_DIR / "node_modules/@novnc/novnc/vendor"),
    ("vendor/spice-html5/src", BASE_DIR / "node_modules/@spice-project/spice-html5/src"),
    ("vendor/uplot", BASE_DIR / "node_modules/uplot/dist"),  # the admin dashboard's charts
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Static files are served from where the finders see them (no collectstatic step needed).
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_AUTOREFRESH = DEBUG
WHITENOISE_ADD_HEADERS_FUNCTION = add_static_file_headers  # not framed either (security_headers.py)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# The channel layer carries control messages only ("close this console"), never console bytes.
def _redis_driver_info():
    from redis.driver_info import DriverInfo

    return DriverInfo()


CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # One gateway process serves every console it holds through one channel queue, and
            # a logout of many users sends many "close" messages at once: the default queue
            # capacity (100) dropped two thirds of them in bench/console_proxy.py, and the
            # default Redis pool (100 connections, 5 s read timeout racing the layer's 5 s
            # blocking read) failed under 1,000 consoles.
            "hosts": [{
                "address": os.environ.get("CHANNEL_LAYER_URL", REDIS_URL),
                "max_connections": 2000,
                "socket_timeout": 15,  # above the layer's 5 s blocking read
                # Computed once: left to itself, redis-py reads its own version from the installed
                # package's metadata for every connection it opens (about 1.5 ms of CPU each, a
                # scan of sys.path), and a logon storm opens hundreds: 27 % of the portal's CPU
                # in bench/logon_storm.py.
                "driver_info": _redis_driver_info(),
            }],
            "capacity": 5000,
            "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "vdi"),
        },
    }
}
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", celery_broker_url(REDIS_URL))
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Results are kept only for the few tasks the portal waits on (a session host agent's answer),
# which set ignore_result=False; in the same Redis, for minutes.
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_EXPIRES = 300
CELERY_IMPORTS = ["broker.session_tasks", "broker.job_tasks"]
# Periodic jobs; run one `celery beat` per site (`make run` embeds it in its worker).
CELERY_BEAT_SCHEDULE = {
    "reconcile-everything": {
        "task": "broker.tasks.reconcile_everything_task",
        "schedule": env_float("VDI_RECONCILE_SECONDS", 30.0, positive=True),
    },
    "delete-desktops-past-their-hold": {
        "task": "broker.tasks.delete_desktops_past_their_hold_task",
        "schedule": 300.0,
    },
    "check-session-hosts": {
        "task": "broker.session_tasks.check_session_hosts_task",
        "schedule": env_float("VDI_SESSION_HOST_REPORT_SECONDS", 10.0, positive=True),
    },
    # Enqueues each data disk backup that its pool's schedule says is due (broker/services/backups.py).
    "back-up-data-disks": {
        "task": "broker.tasks.back_up_due_data_disks_task",
        "schedule": env_float("VDI_BACKUP_CHECK_SECONDS", 3600.0, positive=True),
    },
    # The admin dashboard's samples (charts) and each hypervisor's usage read from libvirt.
    "take-dashboard-sample": {
        "task": "dashboard.tasks.take_dashboard_sample_task",
        "schedule": env_float("VDI_DASHBOARD_SAMPLE_SECONDS", 60.0, positive=True),
    },
    # Without it the ticket table grows by a row per console opened, for ever.
    "purge-expired-console-tickets": {
        "task": "broker.tasks.purge_expired_console_tickets_task",
        "schedule": 600.0,
    },
}
if LDAP_ENABLED:  # noqa: F405
    # Keep users and group memberships in step with the directory without waiting for logins.
    CELERY_BEAT_SCHEDULE["identity-sync-directory"] = {
        "task": "identity.tasks.sync_directory_task",
        "schedule": float(VDI_LDAP_SYNC_INTERVAL_SECONDS),  # noqa: F405
    }

# --- broker knobs --------------------------------------------------------------------------
# How long a console ticket may wait between issue and use.
VDI_CONSOLE_TICKET_TTL_SECONDS = env_int("VDI_CONSOLE_TICKET_TTL_SECONDS", 30, minimum=1)
# Console tickets a user may ask for per minute (each sets a desktop's password through libvirt).
VDI_CONSOLE_TICKETS_PER_MINUTE = env_int("VDI_CONSOLE_TICKETS_PER_MINUTE", 20)
# Origins allowed to open console websockets besides the portal's own origin.
VDI_CONSOLE_ALLOWED_ORIGINS = env_list("VDI_CONSOLE_ALLOWED_ORIGINS")
# How long a dedicated desktop is kept after its user lost the entitlement (a pool may override).
VDI_REVOKED_DESKTOP_GRACE_HOURS = env_float("VDI_REVOKED_DESKTOP_GRACE_HOURS", 72.0)
# Where clones and their storage pool live on a host that the broker sets up itself.
VDI_STORAGE_POOL = os.environ.get("VDI_STORAGE_POOL", "vdi")
VDI_STORAGE_PATH = os.environ.get("VDI_STORAGE_PATH", "/var/lib/vdi/desktops")
# Where golden image files live on a host (a libvirt storage pool, so the broker can check them).
VDI_IMAGE_POOL = os.environ.get("VDI_IMAGE_POOL", "vdi-images")
VDI_IMAGE_PATH = os.environ.get("VDI_IMAGE_PATH", "/var/lib/vdi/images")
# Serial console logs of guests (readable by admins; proves the guest booted).
# Backups of dedicated desktops' data disks: a libvirt dir storage pool of this name at this path
# on every hypervisor (point it at storage that is not the desktops' own: NFS, another disk).
VDI_BACKUP_POOL = os.environ.get("VDI_BACKUP_POOL", "vdi-backups")
VDI_BACKUP_PATH = os.environ.get("VDI_BACKUP_PATH", "/var/lib/vdi/backups")
VDI_GUEST_LOG_DIR = os.environ.get("VDI_GUEST_LOG_DIR", "/var/lib/vdi/logs")
# Prefix of every libvirt domain and volume the broker creates.
VDI_NAME_PREFIX = os.environ.get("VDI_NAME_PREFIX", "vdi-")

# A desktop still queued (no worker took its task) this long after its last try is sent its
# task again by the periodic pass: a task lost with a Redis restart must not hold a launch.
VDI_QUEUED_RETRY_SECONDS = env_float("VDI_QUEUED_RETRY_SECONDS", 120.0, positive=True)
# "Why isn't it ready?": a desktop starting longer than this is shown as a guest that did not answer
# (with the last lines of its serial log, to the admin).
VDI_GUEST_ANSWER_SECONDS = env_float("VDI_GUEST_ANSWER_SECONDS", 120.0, positive=True)
# Long actions (broker/services/jobs.py): a rolling recompose rebuilds at most this many desktops at once.
VDI_RECOMPOSE_BATCH = env_int("VDI_RECOMPOSE_BATCH", 4, minimum=1)

# How often an open console re-checks its user's login and entitlement (a backstop for a lost
# "close" message).
VDI_CONSOLE_RECHECK_SECONDS = env_float("VDI_CONSOLE_RECHECK_SECONDS", 60.0, positive=True)
# --- console gateway (broker/console/) ------------------------------------------------------
# A console ticket's lifetime is VDI_CONSOLE_TICKET_TTL_SECONDS above (at most 60 s); the
# desktop's one-time console password expires with it.
VDI_CONSOLE_TICKET_TTL_SECONDS = min(VDI_CONSOLE_TICKET_TTL_SECONDS, 60)
# SPICE opens one websocket per channel; all of them must arrive this soon after the first.
VDI_CONSOLE_SPICE_CHANNEL_WINDOW_SECONDS = env_float("VDI_CONSOLE_SPICE_CHANNEL_WINDOW_SECONDS", 10.0)
# Site defaults of the per-pool console limits (a pool may override each; 0 minutes: never).
VDI_CONSOLE_MAX_PER_USER = env_int("VDI_CONSOLE_MAX_PER_USER", 4, minimum=1)
VDI_CONSOLE_MAX_PER_DESKTOP = env_int("VDI_CONSOLE_MAX_PER_DESKTOP", 2, minimum=1)
VDI_CONSOLE_IDLE_TIMEOUT_MINUTES = env_float("VDI_CONSOLE_IDLE_TIMEOUT_MINUTES", 60.0)
VDI_CONSOLE_MAX_SESSION_MINUTES = env_float("VDI_CONSOLE_MAX_SESSION_MINUTES", 720.0)
# Where browsers open console websockets: empty for the portal itself, or the base URL of a
# separate gateway tier (config/gateway_asgi.py, or websockify with our token plugin), e.g.
# wss://console.example.com. Its origin must be allowed: add the portal's origin to
# VDI_CONSOLE_ALLOWED_ORIGINS on the gateway tier.
VDI_CONSOLE_GATEWAY_URL = os.environ.get("VDI_CONSOLE_GATEWAY_URL", "").rstrip("/")
# It goes into the Content-Security-Policy header and the console page: a URL and nothing else.
if VDI_CONSOLE_GATEWAY_URL and not re.fullmatch(r"wss?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/-]*)?", VDI_CONSOLE_GATEWAY_URL):
    raise ImproperlyConfigured(
        f"VDI_CONSOLE_GATEWAY_URL must be ws://HOST[:PORT][/PATH] or wss://..., not {VDI_CONSOLE_GATEWAY_URL!r}")
# "broker" (our gateway: the VNC password stays on the server) or "websockify" (a stock
# websockify with broker.console.websockify_plugin; it relays bytes only, so the browser
# must answer QEMU's VNC authentication itself with the one-time password).
VDI_CONSOLE_GATEWAY_KIND = os.environ.get("VDI_CONSOLE_GATEWAY_KIND", "broker")
if VDI_CONSOLE_GATEWAY_KIND not in ("broker", "websockify"):
    raise ImproperlyConfigured(f"VDI_CONSOLE_GATEWAY_KIND must be 'broker' or 'websockify', not {VDI_CONSOLE_GATEWAY_KIND!r}")
# Where the gateway learns the console port when a console connects: "live" asks the
# desktop's host through libvirt at that moment (the portal and any gateway that can reach
# libvirt); "recorded" uses what the broker read from the live definition when the domain last
# started (a proxy tier with no libvirt access: config/gateway_asgi.py defaults to it). Both
# also require the port the ticket's grant read live, where its one-time password was set.
VDI_CONSOLE_TARGET_LOOKUP = os.environ.get("VDI_CONSOLE_TARGET_LOOKUP", "live")
if VDI_CONSOLE_TARGET_LOOKUP not in ("live", "recorded"):
    raise ImproperlyConfigured("VDI_CONSOLE_TARGET_LOOKUP must be 'live' or 'recorded'")

# --- admin dashboard (dashboard/) ------------------------------------------------------------
# How often a sample of the site (and each hypervisor's usage) is taken; how often the page polls.
VDI_DASHBOARD_SAMPLE_SECONDS = env_float("VDI_DASHBOARD_SAMPLE_SECONDS", 60.0, positive=True)
VDI_DASHBOARD_POLL_SECONDS = env_float("VDI_DASHBOARD_POLL_SECONDS", 5.0, positive=True)
# Samples of each period are kept this long (24-hour charts); hour roll-ups this long (30 days).
VDI_DASHBOARD_MINUTE_SAMPLES_DAYS = env_float("VDI_DASHBOARD_MINUTE_SAMPLES_DAYS", 2.0, positive=True)
VDI_DASHBOARD_HOUR_SAMPLES_DAYS = env_float("VDI_DASHBOARD_HOUR_SAMPLES_DAYS", 35.0, positive=True)

# --- shared sessions (farms, session hosts and their agents) ---------------------------------
# Each host's agent is a Celery worker consuming the queue PREFIX + host name.
VDI_AGENT_QUEUE_PREFIX = os.environ.get("VDI_AGENT_QUEUE_PREFIX", "agent.")
# How often the beat asks each session host's agent for its load and sessions; a host silent for
# three periods (at least 30 s) is offline and its sessions are lost.
VDI_SESSION_HOST_REPORT_SECONDS = env_float("VDI_SESSION_HOST_REPORT_SECONDS", 10.0, positive=True)
# On a session host (read by its agent): where session state lives, how OS accounts are named
# ("PREFIX<user id>-<user name>") and where their persistent homes are.
VDI_SESSION_STATE_DIR = os.environ.get("VDI_SESSION_STATE_DIR", "/var/lib/vdi/sessions")
VDI_SESSION_ACCOUNT_PREFIX = os.environ.get("VDI_SESSION_ACCOUNT_PREFIX", "vdi-")
VDI_SESSION_HOME_ROOT = os.environ.get("VDI_SESSION_HOME_ROOT", "/home")
# How long the portal waits for a session host's agent to answer (a console's password).
VDI_AGENT_CALL_TIMEOUT_SECONDS = env_float("VDI_AGENT_CALL_TIMEOUT_SECONDS", 5.0, positive=True)
# Memory overcommit: a running VM desktop with no console open for this long gives part of its
# memory back to its host (its balloon), until its user connects again. 0: never.
VDI_BALLOON_IDLE_MINUTES = env_float("VDI_BALLOON_IDLE_MINUTES", 15.0)
VDI_BALLOON_IDLE_SHARE = env_float("VDI_BALLOON_IDLE_SHARE", 0.5, maximum=1.0)  # of the pool's memory kept

# --- REST API (api/) and metrics -----------------------------------------------------------
REST_FRAMEWORK = {
    # Scripts send "Authorization: Token <key>" (tokens: the admin, or manage.py create_api_token);
    # the browser (docs page, browsable API) uses the admin's login session, with CSRF.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        # A staff user's session counts only once a second factor was verified (identity/mfa/).
        "identity.mfa.policy.VerifiedSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.ApiRolePermission"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.ApiPagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend",
                                "rest_framework.filters.OrderingFilter"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer",
                                 "rest_framework.renderers.BrowsableAPIRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "VDI broker API",
    "DESCRIPTION": "Pools, images, hosts, desktops, console sessions, entitlements, events, and the admin's "
                   "actions (drain, move, end session, delete, recompose). Token: `Authorization: Token <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files from our own origin (the Content-Security-Policy allows no CDN).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}
# /metrics: answered to these client addresses, or to a request with "Authorization: Bearer
# <VDI_METRICS_TOKEN>" (when set); to nobody else.
VDI_METRICS_ALLOW = env_list("VDI_METRICS_ALLOW", "127.0.0.1,::1")
VDI_METRICS_TOKEN = os.environ.get("VDI_METRICS_TOKEN", "")
# /readyz: how long it waits for a Celery worker to answer a ping, and for Redis.
VDI_READYZ_TIMEOUT_SECONDS = env_float("VDI_READYZ_TIMEOUT_SECONDS", 1.5, positive=True)

VDI_LOG_LEVEL = os.environ.get("VDI_LOG_LEVEL", "INFO").strip().upper()
if VDI_LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"VDI_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {VDI_LOG_LEVEL!r}")
# Logs: JSON lines (or text) with the request id that follows a launch into its Celery tasks
# (config/logs.py; django-structlog). VDI_LOG_FORMAT=json|text.
VDI_LOG_FORMAT = log_format(os.environ.get("VDI_LOG_FORMAT", "json"))
LOGGING = logging_config(fmt=VDI_LOG_FORMAT, level=VDI_LOG_LEVEL)
configure_structlog()
DJANGO_STRUCTLOG_CELERY_ENABLED = True
# An X-Request-ID reaches Django only from a trusted proxy (config/forwarded.py drops the rest).
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = True
# django-ipware would read X-Forwarded-For from anyone: the address is bound from REMOTE_ADDR
# (which config/forwarded.py sets from trusted proxies only) in config/request_ids.py instead.
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = False
