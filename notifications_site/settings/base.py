"""Django itself and the database (the environment variables are listed in settings/__init__.py)."""

from pathlib import Path
import os

import dj_database_url
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured

from ..env import env_bool, env_float, env_int

BASE_DIR = Path(__file__).resolve().parent.parent.parent


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
    "corsheaders",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "channels",
    "django_tasks",  # the durable schedule of the fallbacks (inbox/fallback/)
    "django_tasks_db",
    "server",
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
    # CORS for the product's web origins (INBOX_ALLOWED_ORIGINS; settings/api.py): as high as
    # possible, before anything that may answer (CommonMiddleware), as django-cors-headers says.
    # Async-capable, so it adds no thread switch at the top of the chain.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "inbox.middleware.ContentSecurityPolicyMiddleware",  # django-csp's, the header built once
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "inbox.middleware.DatabaseUnavailableMiddleware",
    "inbox.middleware.BodySizeLimitMiddleware",
    "inbox.middleware.RequestParametersMiddleware",
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
    # The threads of one process queue for that lock fairly (server/db/sqlite).
    DATABASES["default"]["ENGINE"] = "server.db.sqlite"
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

DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("INBOX_MAX_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000

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

# --- Security headers -----------------------------------------------------------------------
# HTTPS behind a proxy: the proxy says so in a header (X-Forwarded-Proto: https), trusted when
# DJANGO_SECURE_PROXY_SSL_HEADER names it; by default when INBOX_NUM_PROXIES says there is a proxy.
# "" turns it off. https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
_proxy_ssl_header = os.environ.get(
    "DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto" if env_int("INBOX_NUM_PROXIES", 0) > 0 else ""
).strip()
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
# HSTS on every HTTPS response once DEBUG is off: a year, subdomains only when asked.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
# Content-Security-Policy on every response (django-csp), DEBUG on or off: only this origin's
# scripts, styles, images and connections (the WebSocket too: 'self' covers ws:/wss: of this host).
# No 'unsafe-inline': the page and the admin have no inline script; the API docs' one inline
# style carries the request's nonce (inbox/api/schema.py). DJANGO_CSP_REPORT_ONLY=1 sends it as
# Content-Security-Policy-Report-Only instead, to try a change of the page first.
_csp = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", NONCE],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
if env_bool("DJANGO_CSP_REPORT_ONLY", False):
    CONTENT_SECURITY_POLICY_REPORT_ONLY = _csp
    CONTENT_SECURITY_POLICY = None
else:
    CONTENT_SECURITY_POLICY = _csp
