"""
Settings for the Inbox notification service.

Everything comes from the environment, with safe local defaults (cookiecutter-django style):

- ``DATABASE_URL``: SQLite file ``db.sqlite3`` when unset; ``postgres://...`` in production and CI.
- ``REDIS_URL``: the in-memory channel layer when unset (one process only); ``redis://...`` otherwise.
- ``DJANGO_SECRET_KEY``: required when ``DJANGO_DEBUG`` is off; the service refuses to start without it.
- ``DJANGO_DEBUG``: ``1``/``true`` for local development (the default), ``0``/``false`` in production.
- ``DJANGO_ALLOWED_HOSTS``: comma-separated host names.
"""

from datetime import timedelta
from pathlib import Path
import os

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


DEBUG = env_bool("DJANGO_DEBUG", True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. With DJANGO_DEBUG off the service refuses to start "
            "without a secret key: set DJANGO_SECRET_KEY to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "inbox",
    "realtime",
]

# The sync-only middlewares come last, on purpose. Under ASGI, Django runs every middleware that
# can be async in async mode, and each sync hook of those (process_request, process_response) is
# a thread switch: about a dozen per request. Below a sync-only middleware the chain is sync, so
# with these at the bottom the whole chain runs in one thread switch. Measured with bench/:
# 13.5 -> 10.0 ms of server CPU per send.
# https://docs.djangoproject.com/en/5.2/topics/http/middleware/#asynchronous-support
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "inbox.middleware.DatabaseUnavailableMiddleware",
    "inbox.middleware.BodySizeLimitMiddleware",
]

ROOT_URLCONF = "notifications_site.urls"

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

WSGI_APPLICATION = "notifications_site.wsgi.application"
ASGI_APPLICATION = "notifications_site.asgi.application"

# --- Database -------------------------------------------------------------------------------
# https://github.com/jazzband/dj-database-url
if not os.environ.get("DATABASE_URL", "").strip():
    os.environ.pop("DATABASE_URL", None)  # set but empty: the SQLite default, as when unset
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 60),
        # Recover by itself after a PostgreSQL restart: a dead persistent connection is
        # replaced at the start of the next request.
        # https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-database-connections
        conn_health_checks=True,
    )
}
DATABASE_IS_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
if DATABASE_IS_SQLITE:
    # Several processes (daphne + the shell) share the file: wait for the write lock instead of
    # failing at once, and take it at BEGIN so ids are allocated in commit order.
    # https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-transaction-behavior
    # The threads of one process queue for that lock fairly (notifications_site/sqlite_backend).
    DATABASES["default"]["ENGINE"] = "notifications_site.sqlite_backend"
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # Fail fast when PostgreSQL is down, so a send answers 503 instead of hanging.
            "connect_timeout": env_int("DATABASE_CONNECT_TIMEOUT", 3),
        }
    )
    if env_bool("DATABASE_POOL", True):
        # Under ASGI every request runs in a new thread, so CONN_MAX_AGE never reuses a connection:
        # a connection per request (bench/: 169 PostgreSQL connections at peak, ~9.5 ms of
        # PostgreSQL CPU per send). Django's psycopg pool instead; CONN_HEALTH_CHECKS makes it check
        # a connection before handing it out, so a PostgreSQL restart heals by itself.
        # https://docs.djangoproject.com/en/5.2/ref/databases/#connection-pool
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": env_int("DATABASE_POOL_MIN", 2),
            "max_size": env_int("DATABASE_POOL_MAX", 16),
            "timeout": env_float("DATABASE_POOL_TIMEOUT", 3.0),
        }
        if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
            # The pool's check without a round trip per request, unless the connection's socket
            # shows it broke or it was last checked this many seconds ago (0: a round trip on
            # every checkout, Django's own check). notifications_site/postgresql_backend.
            DATABASES["default"]["ENGINE"] = "notifications_site.postgresql_backend"
            DATABASES["default"]["OPTIONS"]["pool_full_check_seconds"] = env_float("DATABASE_POOL_FULL_CHECK_SECONDS", 30.0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Django 6 behaviour for URL form fields (https), opted into now.
FORMS_URLFIELD_ASSUME_HTTPS = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve straight from the apps' static folders when collectstatic has not run (development, tests).
WHITENOISE_USE_FINDERS = True

# --- Request limits -------------------------------------------------------------------------
# Bodies over this size are answered 413 before they are read (inbox.middleware).
INBOX_MAX_BODY_BYTES = env_int("INBOX_MAX_BODY_BYTES", 1024 * 1024)
# PostgreSQL: up to this many small sends that arrive while another is being written are written
# together, in one statement and transaction (inbox/group_commit.py); 1 writes each alone.
INBOX_GROUP_COMMIT_MAX = env_int("INBOX_GROUP_COMMIT_MAX", 32)
# A send waiting longer than this for a write in flight to return is written alone beside it.
INBOX_GROUP_COMMIT_STALL_SECONDS = env_float("INBOX_GROUP_COMMIT_STALL_SECONDS", 0.1)
# HTTP requests run in a fixed pool of this many threads (notifications_site/http.py). Below
# DATABASE_POOL_MAX, so a request never waits for a connection and the WebSocket consumers' queries
# keep a few. 0: Django's stock ASGIHandler (a new thread per request).
HTTP_THREADS = env_int("INBOX_HTTP_THREADS", 12)

# The server process' garbage collector (notifications_site/asgi.py): unset keeps Python's
# (700, 10, 10); three numbers freeze what is loaded at startup and set these thresholds. Every
# open socket keeps a few hundred objects alive, and with Python's thresholds a process holding
# 5,000 sockets spends seconds in full collections during a broadcast; "50000,20,10" cut that
# to a fifth but made small requests' p99 worse (bench/README.md, finding 24).
GC_THRESHOLDS = tuple(int(x) for x in os.environ.get("INBOX_GC_THRESHOLDS", "").split(",") if x.strip())
# After each full collection, what survived it is frozen, so the next ones walk only what is new:
# with 5,000 sockets a process, full collections paused it for 200-770 ms (finding 25). The freeze is
# undone, so that a collection of everything finds dead cycles, when the frozen objects have grown
# by GC_FREEZE_GROWTH (0.25 = a quarter) or after GC_FULL_EVERY_SECONDS (notifications_site/gc_policy.py).
GC_FREEZE_SURVIVORS = env_bool("INBOX_GC_FREEZE", True)
GC_FREEZE_GROWTH = env_float("INBOX_GC_FREEZE_GROWTH", 0.25)
GC_FULL_EVERY_SECONDS = env_float("INBOX_GC_FULL_EVERY_SECONDS", 600.0)
DATA_UPLOAD_MAX_MEMORY_SIZE = INBOX_MAX_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000

# --- Inbox domain limits --------------------------------------------------------------------
INBOX = {
    "MAX_RECIPIENTS": env_int("INBOX_MAX_RECIPIENTS", 10_000),
    "MAX_TITLE_LENGTH": 200,
    "MAX_MESSAGE_LENGTH": 10_000,
    "MAX_DATA_BYTES": 16 * 1024,
    "MAX_DATA_DEPTH": 32,
    "MAX_IDS_PER_REQUEST": 1_000,
    "CATCHUP_BATCH": 500,
    "CATCHUP_MAX": env_int("INBOX_CATCHUP_MAX", 10_000),
    "IDEMPOTENCY_KEY_MAX_LENGTH": 255,
    # Users and send permissions are remembered per process this long (inbox/directory.py).
    "DIRECTORY_CACHE_SECONDS": env_float("INBOX_DIRECTORY_CACHE_SECONDS", 5.0),
    # Recipients longer: the insert itself checks that they are still active users.
    "RECIPIENT_CACHE_SECONDS": env_float("INBOX_RECIPIENT_CACHE_SECONDS", 300.0),
}

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "inbox.api.authentication.CachedJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["inbox.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["inbox.api.renderers.FastJSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "inbox.api.negotiation.JSONFirstContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "inbox.api.errors.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "send": os.environ.get("INBOX_THROTTLE_SEND", "100/s"),
        "read": os.environ.get("INBOX_THROTTLE_READ", "50/s"),
        "auth": os.environ.get("INBOX_THROTTLE_AUTH", "30/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Proxies in front of the service whose X-Forwarded-For is trusted to find the client address
    # of the token rate limit. 0: use the socket address, so a forged header cannot dodge the limit.
    # https://www.django-rest-framework.org/api-guide/throttling/#how-clients-are-identified
    "NUM_PROXIES": env_int("INBOX_NUM_PROXIES", 0),
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

# Throttle counters live in a per-process memory cache: a throttle never waits on the network and
# never fails because Redis is down. The limits are therefore per worker process.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "inbox-default"},
    # Histories kept as lists, not pickles (inbox/api/throttle_cache.py). One entry per client and
    # scope: with the default 300, every client past the 300th culled a third of the others'
    # histories, and their limits started over.
    "throttle": {
        "BACKEND": "inbox.api.throttle_cache.ObjectLocMemCache",
        "LOCATION": "inbox-throttle",
        "OPTIONS": {"MAX_ENTRIES": env_int("INBOX_THROTTLE_MAX_CLIENTS", 100_000)},
    },
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_TOKEN_SECONDS", 15 * 60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_TOKEN_DAYS", 7)),
    "UPDATE_LAST_LOGIN": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Inbox API",
    "DESCRIPTION": "Store notifications durably and push them in real time over WebSockets.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Document the error responses too (inbox/api/schema.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "inbox.api.schema.add_error_responses"],
    # Swagger UI served from our own static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Channels -------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # RedisChannelLayer plus one pipelined call for many groups (realtime/layers.py).
            "BACKEND": "realtime.layers.BatchingRedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        # Fail fast when Redis hangs; the database is the record of truth.
                        "socket_timeout": env_float("REDIS_SOCKET_TIMEOUT", 2.0),
                        "socket_connect_timeout": env_float("REDIS_CONNECT_TIMEOUT", 2.0),
                        "max_connections": env_int("REDIS_MAX_CONNECTIONS", 2000),
                    }
                ],
                # A per-socket buffer: a burst larger than this is dropped by the layer and
                # recovered by the client's catch-up.
                # https://channels.readthedocs.io/en/stable/channel_layer_spec.html#capacity
                # Every socket of a process shares one channel key, so this bounds a process's
                # backlog, not a socket's: it must hold the largest fan-out (a broadcast).
                "capacity": env_int("CHANNEL_CAPACITY", 100_000),
                "expiry": 60,
                # Sockets re-add themselves to their group well before this (realtime.consumers).
                "group_expiry": 86400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

REALTIME = {
    # Seconds between a socket's re-joins of its group (channels-redis group_expiry is 86400 s).
    "GROUP_REFRESH_SECONDS": env_int("REALTIME_GROUP_REFRESH_SECONDS", 3600),
    # A fan-out batch that Redis does not take within this many seconds is given up (logged);
    # clients recover it by catch-up.
    "SEND_TIMEOUT": env_float("REALTIME_SEND_TIMEOUT", 2.0),
    # Seconds between checks that Redis still holds the groups; sockets are closed (1012) when
    # it failed or lost them (realtime/watchdog.py).
    "LAYER_CHECK_SECONDS": env_float("REALTIME_LAYER_CHECK_SECONDS", 1.0),
    "MAX_FRAME_BYTES": env_int("REALTIME_MAX_FRAME_BYTES", 64 * 1024),
    # Token bucket per socket for client frames.
    "FRAME_RATE": env_float("REALTIME_FRAME_RATE", 20.0),
    "FRAME_BURST": env_int("REALTIME_FRAME_BURST", 60),
    # Frames refused in a row before the socket is closed with 4429.
    "FRAME_ABUSE_CLOSE": env_int("REALTIME_FRAME_ABUSE_CLOSE", 100),
    "MAX_PENDING_EVENTS": env_int("REALTIME_MAX_PENDING_EVENTS", 100_000),
}

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django.channels.server": {"level": "WARNING"},
    },
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
