"""
simplejwt's JWT authentication, with the token's user remembered per process (inbox/directory.py)
and each verified token remembered until it expires.

A token names its user only through claims read strictly (``directory.user_id_from_claim``: an
integer, never 1.5 or true for user 1) and only while its ``token_version`` is the user's
(inbox.models.TokenVersion: a password change or a deactivation revokes every token issued before).
The token endpoints issue tokens with the claim and refuse a refresh token of a deleted, inactive
or revoked user with a 401.

Tokens the product signs itself go another way: a token whose ``iss`` names an issuer of
INBOX["TRUSTED_ISSUERS"] is verified by inbox/trusted_issuers.py (its signature, ``exp``, ``aud``,
``sub`` the external id) and authenticates the recipient that ``sub`` names; a token whose ``iss``
names no trusted issuer (nor simplejwt's own ISSUER) is a 401; a token without ``iss`` is
simplejwt's, as before. Every malformed claim is a 401, never a 500: simplejwt turns ``exp`` into a
datetime, and an ``exp`` past year 9999 (``1e30``) raised OverflowError out of the authentication.
"""

import copy
import time
from datetime import timedelta

from django.core.exceptions import ObjectDoesNotExist
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings

from inbox import directory, trusted_issuers

NO_USER = _("Token contained no recognizable user identification")
MALFORMED = _("Token is invalid: a claim is malformed.")
UNTRUSTED = _("Token is invalid: its issuer (iss) is not trusted.")
# What simplejwt's own checks raise for a claim out of range (datetime.fromtimestamp of a huge exp)
# besides its TokenError: a 401 like any bad token.
MALFORMED_CLAIM_ERRORS = (OverflowError, OSError, ValueError, TypeError)
REVOKED = _("User not found or inactive, or the token was revoked (password changed or account deactivated).")


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
            token = trusted_issuers.cached_token(raw_token)
        if token is not None:
            return token
        iss = trusted_issuers.claimed_issuer(raw_token)
        if iss is not None and iss != api_settings.ISSUER:
            return self.get_trusted_token(raw_token)
        try:
            token = super().get_validated_token(raw_token)  # raises InvalidToken
        except MALFORMED_CLAIM_ERRORS:
            raise InvalidToken(MALFORMED) from None
        verified_tokens.add(raw_token, token)
        return token

    def get_trusted_token(self, raw_token) -> trusted_issuers.TrustedToken:
        """A token the product signed: verified, and its recipient ensured (created on first use)."""
        try:
            return trusted_issuers.token_authenticate(raw_token)
        except trusted_issuers.UntrustedIssuer:
            raise InvalidToken(UNTRUSTED) from None
        except trusted_issuers.InvalidTrustedToken as exc:
            raise InvalidToken(_("Token is invalid: %(reason)s") % {"reason": exc}) from None

    def get_user(self, validated_token):
        if isinstance(validated_token, trusted_issuers.TrustedToken):
            user = directory.token_user(validated_token.user_id, validated_token.token_version)
            if user is None:
                raise AuthenticationFailed(REVOKED, code="token_revoked")
            return copy.copy(user)
        user_id = directory.user_id_from_claim(validated_token.get(api_settings.USER_ID_CLAIM))
        version = directory.token_version_from_claim(validated_token)
        if user_id is None or version is None:
            raise InvalidToken(NO_USER)
        if api_settings.CHECK_REVOKE_TOKEN:  # simplejwt's password-hash claim, checked each time
            user = super().get_user(validated_token)
            if directory.token_user(user_id, version) is None:
                raise AuthenticationFailed(REVOKED, code="token_revoked")
            return user
        user = directory.token_user(user_id, version)  # remembered for a few seconds
        if user is None:
            raise AuthenticationFailed(REVOKED, code="token_revoked")
        # A copy per request: views and has_perm() set attributes on request.user.
        return copy.copy(user)


def token_user_or_401(token):
    """The user a (refresh) token names if it is still good for them, from the database; a 401 otherwise."""
    user_id = directory.user_id_from_claim(token.payload.get(api_settings.USER_ID_CLAIM))
    version = directory.token_version_from_claim(token.payload)
    if user_id is None or version is None:
        raise InvalidToken(NO_USER)
    user = directory.token_user(user_id, version, fresh=True)
    if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
        raise AuthenticationFailed(REVOKED, code="token_revoked")
    return user


class VersionedTokenObtainPairSerializer(TokenObtainPairSerializer):
    """simplejwt's sign-in, with the user's current ``token_version`` in both tokens."""

    @classmethod
    def get_token(cls, user):
        token = super().get_token(user)
        token[directory.TOKEN_VERSION_CLAIM] = directory.current_token_version(user.pk)
        return token


class CheckedTokenRefreshSerializer(TokenRefreshSerializer):
    """
    simplejwt's refresh, after asking the database whether the refresh token's user still exists,
    is active and has not revoked it: simplejwt's own check was a 500 for a deleted user and
    skipped a user id of "" or null.
    """

    def validate(self, attrs):
        try:
            token = self.token_class(attrs["refresh"])  # TokenError: the view's 401
        except MALFORMED_CLAIM_ERRORS:
            raise InvalidToken(MALFORMED) from None
        if token.payload.get("iss") != api_settings.ISSUER:  # as on the API: another issuer's token is not Inbox's
            raise InvalidToken(UNTRUSTED)
        token_user_or_401(token)
        try:
            return super().validate(attrs)
        except ObjectDoesNotExist:  # deleted in between
            raise AuthenticationFailed(REVOKED, code="token_revoked") from None


class CachedJWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of simplejwt ("jwtAuth"), for the subclass above."""

    target_class = "inbox.api.authentication.CachedJWTAuthentication"
