"""
API keys of services: ``Authorization: Api-Key <key>`` (djangorestframework-api-key's format and
hashing, on inbox.models.ServiceKey).

A key authenticates as its service account (``request.user``; the sender of its notifications, the
owner of its idempotency keys), and ``request.auth`` is the ServiceKey, whose scopes the permissions
below read. A wrong, revoked or expired key, or one of an inactive account, is a 401 with
``WWW-Authenticate: Api-Key``.

A service sends many requests with one key, so a verified key is remembered per process for
``INBOX["DIRECTORY_CACHE_SECONDS"]``, under a SHA-256 digest of the raw key (never the key itself):
a revocation takes effect at once in the process that saved it (the signal receivers below) and
within those seconds in the others. ``last_used_at`` is written at most once a minute per key, with
an UPDATE that another process' recent write turns into a no-op, so a send costs no write.
"""

from __future__ import annotations

import copy
import hashlib
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import permissions
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_api_key.permissions import KeyParser

from inbox import directory
from inbox.models import ServiceKey

KEYWORD = "Api-Key"
LAST_USED_EVERY = 60.0  # seconds between two writes of a key's last_used_at
# What a key can look like: djangorestframework-api-key writes "<8 letters or digits>.<32 of them>".
# Anything else (a NUL, a space, a megabyte) is refused before it reaches the database.
KEY_RE = re.compile(r"^[A-Za-z0-9]{1,8}\.[A-Za-z0-9]{1,128}\Z")

SEND, MINT, RECIPIENTS = (ServiceKey.Scope.SEND.value, ServiceKey.Scope.MINT.value, ServiceKey.Scope.RECIPIENTS.value)


class InvalidApiKey(AuthenticationFailed):
    """
    A 401 that names its own scheme. DRF sets ``auth_header`` to the first authentication class's
    (simplejwt's ``Bearer``) on every 401; a client that sent a key is told about keys.
    """

    @property
    def auth_header(self) -> str:
        return KEYWORD

    @auth_header.setter
    def auth_header(self, value) -> None:
        pass  # the view's scheme; ours stands


@dataclass
class _Verified:
    key: ServiceKey
    user: object
    last_used: float  # time.time() of the last write of last_used_at known to this process


class VerifiedKeys:
    """Digest of a raw key -> its verified key and service account, for DIRECTORY_CACHE_SECONDS."""

    def __init__(self) -> None:
        self._cache = directory.TTLCache(10_000)
        self._lock = threading.Lock()

    @staticmethod
    def digest(raw: str) -> bytes:
        return hashlib.sha256(raw.encode()).digest()

    def get(self, raw: str) -> _Verified | None:
        return self._cache.get(self.digest(raw))

    def add(self, raw: str, entry: _Verified) -> None:
        self._cache.set(self.digest(raw), entry)

    def clear(self, **kwargs) -> None:
        self._cache.clear()

    def touch(self, entry: _Verified) -> None:
        """Write the key's last_used_at when this process knows of no write in the last minute."""
        now = time.time()
        with self._lock:
            if now - entry.last_used < LAST_USED_EVERY:
                return
            entry.last_used = now
        moment = timezone.now()
        ServiceKey.objects.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=moment - timedelta(seconds=LAST_USED_EVERY)), pk=entry.key.pk).update(
            last_used_at=moment
        )


verified_keys = VerifiedKeys()


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <key>``: the key's service account, and the key as ``request.auth``."""

    key_parser = KeyParser()

    def authenticate(self, request):
        raw = self.key_parser.get_from_authorization(request)
        if raw is None:
            return None  # no Api-Key header: another scheme's turn
        entry = verified_keys.get(raw)
        if entry is None:
            entry = self._verify(raw)
            verified_keys.add(raw, entry)
        if entry.key.has_expired:
            raise InvalidApiKey("This API key has expired.")
        verified_keys.touch(entry)
        # A copy per request: views and has_perm() set attributes on request.user.
        return copy.copy(entry.user), entry.key

    def _verify(self, raw: str) -> _Verified:
        raw = raw.strip()
        if not KEY_RE.match(raw):
            raise InvalidApiKey("Malformed API key: expected 'Api-Key <prefix>.<secret>'.")
        # The manager's get_from_key, with the account in the same query: the usable (unrevoked) key
        # of this prefix whose hash matches.
        prefix = raw.partition(".")[0]
        key = ServiceKey.objects.get_usable_keys().select_related("service").filter(prefix=prefix).first()
        if key is None or not key.is_valid(raw):
            raise InvalidApiKey("Invalid or revoked API key.")
        if not key.service.is_active:
            raise InvalidApiKey("The service account of this API key is inactive.")
        last = key.last_used_at.timestamp() if key.last_used_at is not None else 0.0
        return _Verified(key=key, user=key.service, last_used=last)

    def authenticate_header(self, request) -> str:
        return KEYWORD


def request_key(request) -> ServiceKey | None:
    """The API key that authenticated ``request``, or None (a token, a session)."""
    auth = request.auth
    return auth if isinstance(auth, ServiceKey) else None


class ScopeOrPermission(permissions.BasePermission):
    """
    An API key holding ``scope``, or a user (token, session) holding any of ``perms`` (none: keys
    only). A key without the scope is a 403 that names it.
    """

    scope: str = ""
    perms: tuple[str, ...] = ()
    who: str = ""  # what the permission allows, for the 403's sentence

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        key = request_key(request)
        if key is not None:
            if key.has_scope(self.scope):
                return True
            self.message = f"This API key lacks the '{self.scope}' scope (it {self.who})."
            return False
        if not self.perms:
            self.message = f"Only an API key with the '{self.scope}' scope may do this."
            return False
        if self.user_allowed(user):
            return True
        self.message = self.refused_user_message or f"You do not have permission to do this (it needs {' or '.join(self.perms)})."
        return False

    refused_user_message: str = ""

    def user_allowed(self, user) -> bool:
        return any(user.has_perm(p) for p in self.perms)


class CanMintTokens(ScopeOrPermission):
    scope, perms, who = MINT, (), "mints tokens for recipients"


class CanProvisionRecipients(ScopeOrPermission):
    """PUT and GET of a recipient: keys with ``recipients`` or ``send``; users who may manage recipients or send."""

    scope, who = RECIPIENTS, "provisions recipients"
    perms = ("inbox.manage_recipients", "inbox.send_notification")

    def has_permission(self, request, view):
        key = request_key(request)
        if key is not None and key.has_scope(SEND):
            return True
        return super().has_permission(request, view)


class CanEraseRecipients(ScopeOrPermission):
    scope, perms, who = RECIPIENTS, ("inbox.manage_recipients",), "erases recipients"


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of ApiKeyAuthentication ("apiKeyAuth")."""

    target_class = "inbox.api.keys.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "A service's API key: `Authorization: Api-Key <key>` (created with `python manage.py inbox_apikey "
                "create <name> --scopes send,mint,recipients` or in the admin). Scopes: `send` (send notifications, "
                "provision recipients), `mint` (POST /api/auth/user-token/), `recipients` (provision and erase recipients)."
            ),
        }


# A key saved (revoked, its scopes changed) or deleted, or an account changed in this process: forget
# the keys verified here at once. Receivers are connected where the cache lives: until this module
# is imported, no key is remembered.
post_save.connect(verified_keys.clear, sender=ServiceKey, dispatch_uid="inbox.api.keys.saved")
post_delete.connect(verified_keys.clear, sender=ServiceKey, dispatch_uid="inbox.api.keys.deleted")


def _connect_user_signals() -> None:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    post_save.connect(verified_keys.clear, sender=User, dispatch_uid="inbox.api.keys.user_saved")
    post_delete.connect(verified_keys.clear, sender=User, dispatch_uid="inbox.api.keys.user_deleted")


_connect_user_signals()
