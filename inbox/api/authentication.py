"""
simplejwt's JWT authentication, with the token's user remembered per process (inbox/directory.py)
and each verified token remembered until it expires.
"""

import copy
import time
from datetime import timedelta

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.settings import api_settings

from inbox import directory


class VerifiedTokens:
    """
    Raw access token -> its verified token, until the token's own expiry. Checking the signature and
    claims of the same bytes gives the same answer until then, and a service sends many requests with
    one token (bench/JOURNAL.md, finding 26). Held in the directory's TTL cache, bounded.
    This holds for simplejwt's AccessToken, which asks nothing of the database; a token of a class
    that consults a denylist on every check (simplejwt's BlacklistMixin) is not remembered.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._cache = directory.TTLCache(max_entries, setting=None)

    def get(self, raw: bytes):
        return self._cache.get(raw)

    def add(self, raw: bytes, token) -> None:
        if hasattr(token, "check_blacklist"):
            return
        leeway = api_settings.LEEWAY  # seconds or a timedelta, as simplejwt accepts
        leeway = leeway.total_seconds() if isinstance(leeway, timedelta) else float(leeway)
        try:
            valid_until = float(token["exp"]) + leeway  # simplejwt: expired once exp <= now - leeway
        except (KeyError, TypeError, ValueError):
            return
        self._cache.set(raw, token, ttl=valid_until - time.time())

    def clear(self) -> None:
        self._cache.clear()


verified_tokens = VerifiedTokens()


class CachedJWTAuthentication(JWTAuthentication):
    def get_validated_token(self, raw_token):
        token = verified_tokens.get(raw_token)
        if token is None:
            token = super().get_validated_token(raw_token)  # raises InvalidToken
            verified_tokens.add(raw_token, token)
        return token

    def get_user(self, validated_token):
        user_id = validated_token.get(api_settings.USER_ID_CLAIM)
        if user_id is None or api_settings.CHECK_REVOKE_TOKEN:  # the revocation claim is checked each time
            return super().get_user(validated_token)
        cached = directory.users.get(user_id)
        if cached is not None:
            # A copy per request: views and has_perm() set attributes on request.user.
            return copy.copy(cached)
        user = super().get_user(validated_token)  # raises for an unknown or inactive user
        directory.users.set(user_id, user)
        return copy.copy(user)


class CachedJWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of simplejwt ("jwtAuth"), for the subclass above."""

    target_class = "inbox.api.authentication.CachedJWTAuthentication"
