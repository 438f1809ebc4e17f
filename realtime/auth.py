"""
JWT authentication for WebSockets.

The access token comes either as the subprotocol pair ``["bearer", "<access>"]`` (preferred: it
stays out of URLs and logs) or as ``?token=<access>``. The middleware copies the scope and sets
``scope["user"]``, ``scope["token_exp"]`` (a UNIX time) and, when authentication failed,
``scope["auth_error"]``; the consumer closes such sockets with 4401. Like
``channels.auth.AuthMiddleware``, it keeps no state on the instance.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import InterfaceError, OperationalError
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

from inbox import directory

BEARER = "bearer"
DATABASE_UNAVAILABLE = "database_unavailable"
MAX_TOKEN_LENGTH = 4096


def token_from_scope(scope) -> str | None:
    subprotocols = scope.get("subprotocols") or []
    if len(subprotocols) >= 2 and subprotocols[0] == BEARER:
        return subprotocols[1]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


async def _get_active_user(user_id):
    """The token's active user, remembered per process for a few seconds (inbox/directory.py)."""
    try:
        cached = directory.users.get(user_id)
    except TypeError:  # an unhashable claim
        return None
    if cached is not None:
        return cached
    user = await _load_active_user(user_id)
    if user is not None:
        directory.users.set(user_id, user)
    return user


@database_sync_to_async
def _load_active_user(user_id):
    User = get_user_model()
    try:
        return User.objects.get(**{api_settings.USER_ID_FIELD: user_id}, is_active=True)
    except (User.DoesNotExist, ValueError, TypeError):
        return None


async def authenticate(scope) -> tuple[object, int | None, str | None]:
    """Returns (user, token expiry, error code)."""
    raw = token_from_scope(scope)
    if not raw:
        return AnonymousUser(), None, "token_missing"
    if len(raw) > MAX_TOKEN_LENGTH:
        return AnonymousUser(), None, "token_invalid"
    try:
        token = AccessToken(raw)
    except TokenError:
        return AnonymousUser(), None, "token_invalid"
    user_id = token.get(api_settings.USER_ID_CLAIM)
    try:
        user = await _get_active_user(user_id) if user_id is not None else None
    except (OperationalError, InterfaceError):
        # PostgreSQL down or restarting: the consumer closes with 1013 (try again later).
        return AnonymousUser(), None, DATABASE_UNAVAILABLE
    if user is None:
        return AnonymousUser(), None, "user_inactive"
    return user, int(token["exp"]), None


class JWTAuthMiddleware(BaseMiddleware):
    """Sets scope["user"] from a simplejwt access token."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        user, exp, error = await authenticate(scope)
        scope["user"] = user
        scope["token_exp"] = exp
        scope["auth_error"] = error
        return await super().__call__(scope, receive, send)


def JWTAuthMiddlewareStack(inner):
    return JWTAuthMiddleware(inner)
