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
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .conf import inbox_setting


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

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


users = TTLCache()  # user id -> active User (authentication)
send_permissions = TTLCache()  # user id -> may send (bool)
recipients = TTLCache(setting="RECIPIENT_CACHE_SECONDS")  # user id or username -> selectors.Recipient


def forget_all(**kwargs) -> None:
    """Signal receiver: a user, a group or a permission changed in this process."""
    users.clear()
    send_permissions.clear()
    recipients.clear()
