"""
simplejwt's JWT authentication, with the token's user remembered per process (inbox/directory.py)
and each verified token remembered until it expires.
"""

import copy
import threading
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
    one token: the check was 4 % of a send's CPU (bench/README.md, finding 26). Bounded; emptied when full.
    This holds for simplejwt's AccessToken, which asks nothing of the database; a token of a class
    that consults a denylist on every check (simplejwt's BlacklistMixin) is not remembered.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._data: dict[bytes, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def get(self, raw: bytes):
        entry = self._data.get(raw)
        if entry is None or entry[0] <= time.time():
            return None
        return entry[1]

    def add(self, raw: bytes, token) -> None:
        if hasattr(token, "check_blacklist"):
            return
        leeway = api_settings.LEEWAY  # seconds or a timedelta, as simplejwt accepts
        leeway = leeway.total_seconds() if isinstance(leeway, timedelta) else float(leeway)
        try:
            valid_until = float(token["exp"]) + leeway  # simplejwt: expired once exp <= now - leeway
        except (KeyError, TypeError, ValueError):
            return
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.clear()
            self._data[raw] = (valid_until, token)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


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
