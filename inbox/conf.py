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
    # Lifetime of the access tokens POST /api/auth/user-token/ mints for recipients (seconds).
    "MINTED_TOKEN_SECONDS": 900,
    # Issuers whose JWTs are accepted for the recipient their ``sub`` names (inbox/trusted_issuers.py,
    # docs/integration.md): [{"iss", "alg": "HS256" | "RS256" | "ES256", "secret" | "public_key" |
    # "jwks_file", "aud"?}, ...].
    "TRUSTED_ISSUERS": [],
    # The product's web origins ("https://app.example.com"): the WebSocket Origin check accepts them
    # besides ALLOWED_HOSTS (realtime/origin.py); the service's settings give them to CORS for /api/.
    "ALLOWED_ORIGINS": [],
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
    # --- Preferences and fallbacks (inbox/preferences.py, inbox/fallback/) ---
    # Categories nobody can turn off or mute (nor hold back by quiet hours): security notices.
    "CRITICAL_CATEGORIES": ["security"],
    # The categories a person may set preferences for; None accepts any category slug.
    "PREFERENCE_CATEGORIES": None,
    # Web Push when no device acked a notification this long after the send; e-mail (one message
    # for everything still unread) when it is still unread this long after. Per category below.
    "PUSH_AFTER_SECONDS": 30,
    "EMAIL_AFTER_SECONDS": 900,
    "PUSH_AFTER_SECONDS_BY_CATEGORY": {},
    "EMAIL_AFTER_SECONDS_BY_CATEGORY": {},
    # A push service or SMTP server that fails is tried again this many times in all, waiting
    # FALLBACK_RETRY_SECONDS, then twice as long each time (at most FALLBACK_RETRY_MAX_SECONDS).
    "FALLBACK_MAX_ATTEMPTS": 6,
    "FALLBACK_RETRY_SECONDS": 30,
    "FALLBACK_RETRY_MAX_SECONDS": 3600,
    # Most notifications listed in one e-mail (the newest; the message says how many more).
    "EMAIL_MAX_NOTIFICATIONS": 20,
    # The base of the links in e-mails (the inbox page, the unsubscribe link): "https://inbox.example.com".
    "PUBLIC_URL": "http://127.0.0.1:8000",
    # The django-tasks backend alias of the schedule (django-tasks-db's DatabaseBackend).
    "FALLBACK_TASK_BACKEND": "default",
    # Insert the schedule's rows from a thread of their own (off the send path); False: in the caller's.
    "FALLBACK_SCHEDULE_IN_BACKGROUND": True,
    # That thread gathers the sends of this long into one INSERT (the fallbacks are due 30 s and more later).
    "FALLBACK_SCHEDULE_LINGER_SECONDS": 0.25,
    # Web Push (VAPID, RFC 8292): the private key (base64url of the raw 32 bytes; ``python manage.py
    # inbox_vapid`` makes one) and the contact the push services may reach ("mailto:ops@example.com").
    "VAPID_PRIVATE_KEY": "",
    "VAPID_SUBJECT": "",
    # Push services a subscription may point at (a host or a parent domain): Inbox POSTs to the
    # endpoint a browser gives, so not to anything else (no requests to internal addresses).
    "PUSH_SERVICE_HOSTS": ["fcm.googleapis.com", "push.services.mozilla.com", "notify.windows.com", "push.apple.com"],
    "PUSH_TTL_SECONDS": 24 * 3600,  # how long a push service keeps a push for a browser that is offline
    "PUSH_TIMEOUT_SECONDS": 10.0,
    "MAX_PUSH_SUBSCRIPTIONS": 20,  # per person (browsers and devices)
    # --- Retention (inbox/services/retention.py, docs/feed.md#retention) ---
    # Days a notification is kept after its creation: None keeps every one, a number applies to every
    # category, a dict per category with "*" for the others ({"general": 30, "security": None, "*": 90}).
    "RETENTION_DAYS": None,
    # Tombstones (the change journal's deletions) older than this are purged; a client resuming from
    # before them is told to reset (JournalFloor). None keeps them.
    "JOURNAL_RETENTION_DAYS": 30,
    # Rows per purge transaction (each its own short transaction), and the seconds between two purge
    # rounds on the task worker (0: no periodic run; ``python manage.py inbox_purge`` still works).
    "PURGE_BATCH_SIZE": 1_000,
    "PURGE_EVERY_SECONDS": 60,
    # A notification whose expires_at passed this long ago is deleted by the next round, and its
    # open tabs told (notification.deleted, a tombstone with reason "expired").
    "EXPIRED_GRACE_SECONDS": 0,
    # The django-tasks backend alias the periodic purge is enqueued on.
    "PURGE_TASK_BACKEND": "default",
}


def inbox_setting(name: str) -> Any:
    """``settings.INBOX[name]``, or its documented default."""
    configured = getattr(settings, "INBOX", None)
    if configured is not None and name in configured:
        return configured[name]
    return DEFAULTS[name]
