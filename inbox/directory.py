"""
Who is who, remembered per process for a few seconds.

Every send asked the database three times about users before doing its work: the token's user
(simplejwt's ``JWTAuthentication.get_user``), whether that user may send (``has_perm``: two
queries), and who the recipients are. In bench/ (directed sends) these were about a fifth of the
server's CPU. Users and send permissions are kept here for ``INBOX["DIRECTORY_CACHE_SECONDS"]``
(5 s), recipients for ``INBOX["RECIPIENT_CACHE_SECONDS"]`` (300 s).

A change made through Django in this process (a user saved or deleted, permissions or groups
changed) forgets everything at once; another process sees it within those seconds. So a
deactivated user or a revoked send permission can still act for at most 5 s, on other server
processes. Recipients can be kept longer because the write checks them again
(services.notification_create: inside the INSERT on PostgreSQL, one query on SQLite) and stores
rows only for active users; a send to one that is gone is refused with the same 400. With 5 s, a server process of the directed benchmark (1,000
recipients, each sent to every ~11 s per process) asked the database about nearly every send.
Only positive answers are kept: an unknown recipient is asked again each time.

A token names its user through two claims read here, strictly: ``user_id`` (an integer, or the
decimal string simplejwt writes; never a float, a bool, a list: ``int(1.5)`` and ``int(True)`` are
user 1) and ``token_version`` (inbox.models.TokenVersion; absent means 0). A remembered user carries
the version of its tokens that are still good, so a password change or a deactivation here refuses
older tokens at once, and within those 5 s on other processes for the REST API. The socket (once in
its user's group: store/connect.py's ``snapshot``) and the refresh endpoint (``fresh``) ask the
database, so they never accept a revoked token, and every open socket is closed by the
``CredentialsRevoked`` event (services.credentials_revoke). A change that sends no signal
(``QuerySet.update(is_active=False)``, raw SQL) revokes nothing by itself: call
``services.credentials_revoke(user_id=...)`` after it.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from django.core.exceptions import ValidationError

from .conf import inbox_setting

MAX_ID = 2**63 - 1  # PostgreSQL's bigint; SQLite's integer
MAX_TOKEN_VERSION = 2**31 - 1  # TokenVersion.version, a PositiveIntegerField
TOKEN_VERSION_CLAIM = "token_version"


class TTLCache:
    """
    A bounded dict whose entries expire; safe to share between request threads. An entry lives for
    the INBOX setting ``setting`` (seconds), or for the ``ttl`` given to ``set``. Emptied when full.
    """

    def __init__(self, max_entries: int = 50_000, setting: str | None = "DIRECTORY_CACHE_SECONDS") -> None:
        self.max_entries = max_entries
        self.setting = setting  # the INBOX setting that gives the entries' lifetime in seconds
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key, default=None):
        entry = self._data.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return default
        return entry[1]

    def set(self, key, value, *, ttl: float | None = None) -> None:
        if ttl is None:
            ttl = inbox_setting(self.setting) if self.setting else 0
        if ttl <= 0:
            return
        with self._lock:
            if len(self._data) >= self.max_entries:
                self._data.clear()
            self._data[key] = (time.monotonic() + ttl, value)

    def discard(self, key) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


users = TTLCache()  # user id -> active User with its inbox_token_version (authentication)
send_permissions = TTLCache()  # user id -> may send (bool)
recipients = TTLCache(setting="RECIPIENT_CACHE_SECONDS")  # user id or username -> selectors.Recipient


def forget_all(**kwargs) -> None:
    """Signal receiver: a user, a group or a permission changed in this process."""
    users.clear()
    send_permissions.clear()
    recipients.clear()


# --- Who a token names ------------------------------------------------------------------------------


def user_id_from_claim(value):
    """
    The primary key a token's user id claim names, or None when the claim names no one: for an
    integer key, an int (not a bool) or a canonical decimal string (what simplejwt's ``for_user``
    writes) within the key's range; for another key (a UUID, a string), a string the field accepts.
    """
    field, integer = _user_id_field()
    if integer:
        if type(value) is str and 0 < len(value) <= 19 and value.isascii() and value.isdigit() and (value == "0" or value[0] != "0"):
            value = int(value)
        return value if type(value) is int and 0 <= value <= MAX_ID else None
    if type(value) is not str or not 0 < len(value) <= 255 or "\x00" in value:
        return None
    try:
        return field.to_python(value)
    except ValidationError:
        return None


@functools.cache
def _user_id_field():
    """simplejwt's USER_ID_FIELD of the user model, and whether it is an integer (AutoField, BigAutoField...)."""
    from django.contrib.auth import get_user_model
    from django.db import models
    from rest_framework_simplejwt.settings import api_settings

    field = get_user_model()._meta.get_field(api_settings.USER_ID_FIELD)
    return field, isinstance(field, models.IntegerField)


def token_version_from_claim(claims) -> int | None:
    """The token version a token's claims carry (0 without the claim), or None for a malformed one."""
    value = claims.get(TOKEN_VERSION_CLAIM, 0)
    return value if type(value) is int and 0 <= value <= MAX_TOKEN_VERSION else None


def token_user(user_id, version: int, *, fresh: bool = False):
    """
    The active user ``user_id`` names if their tokens of ``version`` are still good, else None.
    Remembered for DIRECTORY_CACHE_SECONDS; ``fresh`` asks the database (and remembers its answer).
    A token newer than the remembered version (issued by another process after a revocation) asks
    the database too, so a new sign-in works everywhere at once.
    """
    user = None if fresh else users.get(user_id)
    if user is None or version > user.inbox_token_version:
        user = _load_token_user(user_id)
        if user is None:
            users.discard(user_id)
            return None
        users.set(user_id, user)
    return user if user.inbox_token_version == version else None


def cached_token_user(user_id, version: int):
    """``token_user``'s answer when this process remembers a user the token is good for; None means ask it."""
    user = users.get(user_id)
    return user if user is not None and user.inbox_token_version == version else None


def current_token_version(user_id) -> int:
    """The version a new token of the user carries (the ``token_version`` claim), from the database."""
    from .models import TokenVersion

    return TokenVersion.objects.filter(user_id=user_id).values_list("version", flat=True).first() or 0


def _load_token_user(user_id):
    # One statement whose SQL is built once (store/connect.py): the ORM compiled it on every call,
    # a third of a connect's time when the directory does not know the user (bench/JOURNAL.md, 61).
    from .store import connect

    return connect.token_user(user_id)
