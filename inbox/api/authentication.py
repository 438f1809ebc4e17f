"""simplejwt's JWT authentication, with the token's user remembered per process (inbox/directory.py)."""

import copy

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.settings import api_settings

from inbox import directory


class CachedJWTAuthentication(JWTAuthentication):
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
