"""
The inbox's settings: one ``INBOX`` dict in the Django settings, every key optional.

``inbox_setting("MAX_RECIPIENTS")`` is the one way the domain reads them (django-notifications'
``get_config``, anymail's ``get_anymail_setting``). A host project sets only what it changes.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # --- Product limits (what an operator may change on day one) ---
    "MAX_RECIPIENTS": 10_000,  # recipients of one send
    "MAX_TITLE_LENGTH": 200,
    "MAX_MESSAGE_LENGTH": 10_000,
    "MAX_DATA_BYTES": 16 * 1024,  # the JSON of ``data``
    "MAX_DATA_DEPTH": 32,
    "MAX_IDS_PER_REQUEST": 1_000,  # ids in one read, ack or delete
    "MAX_BODY_BYTES": 1024 * 1024,  # request bodies over this are a 413 before they are read
    "CATCHUP_BATCH": 500,  # rows per catch-up query
    "CATCHUP_MAX": 10_000,  # rows per sync; ``more`` tells the client to sync again
    "IDEMPOTENCY_KEY_MAX_LENGTH": 255,
    # Password checks (token requests, admin sign-ins) hashing at once per process; more are a 429 at
    # once (inbox.api.throttles.password_check_slot). A PBKDF2 check is ~0.3 s of a core: 2 leaves the
    # HTTP threads and the other cores to the API during a flood of wrong logins.
    "PASSWORD_CHECKS": 2,
    # Dotted paths of the classes that carry committed events (inbox/delivery).
    "DELIVERY_BACKENDS": ["realtime.delivery.WebSocketBackend"],
    # --- Tuning (docs/performance.md) ---
    # Users and send permissions are remembered per process this long (inbox/caches.py) ...
    "DIRECTORY_CACHE_SECONDS": 5.0,
    # ... recipients longer: the insert itself checks that they are still active users.
    "RECIPIENT_CACHE_SECONDS": 300.0,
    # PostgreSQL: up to this many small sends arriving while another is written are written together
    # in one statement and transaction (inbox/store/group_commit.py); 1 writes each alone.
    "GROUP_COMMIT_MAX": 32,
    # A send waiting longer than this for a write in flight is written alone beside it.
    "GROUP_COMMIT_STALL_SECONDS": 0.1,
}


def inbox_setting(name: str) -> Any:
    """``settings.INBOX[name]``, or its documented default."""
    configured = getattr(settings, "INBOX", None)
    if configured is not None and name in configured:
        return configured[name]
    return DEFAULTS[name]
