"""
JWT authentication for WebSockets.

The access token comes either as the subprotocol pair ``["bearer", "<access>"]`` (preferred: it
stays out of URLs and logs) or as ``?token=<access>``. The middleware copies the scope and sets
``scope["user"]``, ``scope["token_exp"]`` (a UNIX time) and, when authentication failed,
``scope["auth_error"]``; the consumer closes such sockets with 4401. ``scope["token_version"]`` is
the token's version, checked again by ``still_valid`` once the socket joined its group. Like
``channels.auth.AuthMiddleware``, it keeps no state on the instance.

A token whose ``iss`` names an issuer of INBOX["TRUSTED_ISSUERS"] (a token the product signed for
the recipient its ``sub`` names, inbox/trusted_issuers.py) is verified there; one whose ``iss``
names no trusted issuer (nor simplejwt's own ISSUER) is refused; any other token is simplejwt's.
Every refusal closes the socket with 4401, and a trusted token is never accepted once its ``exp``
has passed: ``scope["token_exp"]`` is that ``exp``, so the consumer closes the socket then.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser
from django.db import InterfaceError, OperationalError
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken

from inbox import directory, trusted_issuers
from inbox.store import connect

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


async def _get_token_user(user_id, version: int):
    """The token's active user if the token is still good for them, remembered per process for a few seconds."""
    user = directory.cached_token_user(user_id, version)
    if user is not None:
        return user
    return await database_sync_to_async(directory.token_user)(user_id, version)


async def authenticate(scope) -> tuple[object, int | None, str | None]:
    """Returns (user, token expiry, error code); sets ``scope["token_version"]``."""
    raw = token_from_scope(scope)
    if not raw:
        return AnonymousUser(), None, "token_missing"
    if len(raw) > MAX_TOKEN_LENGTH:
        return AnonymousUser(), None, "token_invalid"
    iss = trusted_issuers.claimed_issuer(raw)
    if iss is not None and iss != api_settings.ISSUER:
        return await _authenticate_trusted(scope, raw)
    try:
        token = AccessToken(raw)
    except (TokenError, OverflowError, OSError, ValueError, TypeError):
        # OverflowError, OSError: simplejwt turns exp into a datetime, and an exp past year 9999 does not fit.
        return AnonymousUser(), None, "token_invalid"
    # Strictly: 1.5 and true are not user 1, and a token of an older version was revoked.
    user_id = directory.user_id_from_claim(token.get(api_settings.USER_ID_CLAIM))
    version = directory.token_version_from_claim(token)
    if user_id is None or version is None:
        return AnonymousUser(), None, "token_invalid"
    scope["token_version"] = version
    try:
        user = await _get_token_user(user_id, version)
    except (OperationalError, InterfaceError):
        # PostgreSQL down or restarting: the consumer closes with 1013 (try again later).
        return AnonymousUser(), None, DATABASE_UNAVAILABLE
    if user is None:
        return AnonymousUser(), None, "user_inactive"
    return user, int(token["exp"]), None


async def _authenticate_trusted(scope, raw: str) -> tuple[object, int | None, str | None]:
    """A token the product signed: verified, its recipient ensured (created on first use), then as any token."""
    token = trusted_issuers.cached_token(raw)
    try:
        if token is None:
            token = await database_sync_to_async(trusted_issuers.token_authenticate)(raw)
    except trusted_issuers.InvalidTrustedToken:
        return AnonymousUser(), None, "token_invalid"
    except (OperationalError, InterfaceError):
        return AnonymousUser(), None, DATABASE_UNAVAILABLE
    if token.claims.exp <= time.time():  # expired between the check and now: never accepted
        return AnonymousUser(), None, "token_invalid"
    scope["token_version"] = token.token_version
    try:
        user = await _get_token_user(token.user_id, token.token_version)
    except (OperationalError, InterfaceError):
        return AnonymousUser(), None, DATABASE_UNAVAILABLE
    if user is None:
        return AnonymousUser(), None, "user_inactive"
    # The consumer closes the socket at token_exp (a whole second, rounded down: never later than exp).
    return user, int(token.claims.exp), None


def still_valid(scope, snapshot: connect.Snapshot) -> bool:
    """
    Asked of the database once the socket joined its user's group (``snapshot``, read then): is
    its user still active and its token not revoked? The check at connect may have answered from
    this process' directory (a user deactivated on another process moments ago), and a revocation
    committed between that check and the join announced its CredentialsRevoked to a group the
    socket was not in yet; from the join on, the event reaches it.
    """
    user = scope.get("user")
    version = scope.get("token_version")
    if user is None or version is None:  # a user set by another middleware: no token to check
        return True
    if snapshot.token_good(version):
        return True
    directory.users.discard(user.pk)  # this process asks the database again next time
    return False


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
