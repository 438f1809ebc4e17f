"""The REST API: Django REST framework, simplejwt, the OpenAPI schema, the throttles' cache."""

import os
from datetime import timedelta

from ..env import env_int
from .base import DEBUG
from .inbox import INBOX

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "inbox.api.authentication.CachedJWTAuthentication",
        "inbox.api.keys.ApiKeyAuthentication",  # Authorization: Api-Key <key> (services)
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
    # Proxies in front of the service that append to X-Forwarded-For: the per-address limits (token
    # requests, admin sign-ins) count the entry this many from the right, read from the raw header
    # whatever the server's --proxy-headers did. 0: the socket address; a request whose address
    # the server took from the header (the client's own words) counts in one shared bucket.
    # inbox.api.throttles.client_address;
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

# --- CORS (django-cors-headers) -------------------------------------------------------------
# The product's web origins (INBOX_ALLOWED_ORIGINS, read in settings/inbox.py) may call the REST API
# from their pages; the WebSocket's Origin check follows the same list (realtime/origin.py). Tokens
# and keys travel in the Authorization header, never in cookies: no credentials.
# https://github.com/adamchainz/django-cors-headers#configuration
CORS_ALLOWED_ORIGINS = INBOX["ALLOWED_ORIGINS"]
CORS_URLS_REGEX = r"^/api/"
CORS_ALLOW_HEADERS = ("authorization", "content-type", "idempotency-key")
CORS_EXPOSE_HEADERS = ("idempotent-replayed", "retry-after")
CORS_ALLOW_CREDENTIALS = False
