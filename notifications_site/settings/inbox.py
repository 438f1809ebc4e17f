"""The notification domain: the INBOX dict (inbox/conf.py has every key's default and meaning)."""

from ..env import env_float, env_int

INBOX = {
    # Product limits.
    "MAX_RECIPIENTS": env_int("INBOX_MAX_RECIPIENTS", 10_000),
    "MAX_BODY_BYTES": env_int("INBOX_MAX_BODY_BYTES", 1024 * 1024),
    "CATCHUP_MAX": env_int("INBOX_CATCHUP_MAX", 10_000),
    "PASSWORD_CHECKS": env_int("INBOX_PASSWORD_CHECKS", 2),
    "DELIVERY_BACKENDS": ["realtime.delivery.WebSocketBackend"],
    # Tuning (docs/performance.md).
    "DIRECTORY_CACHE_SECONDS": env_float("INBOX_DIRECTORY_CACHE_SECONDS", 5.0),
    "RECIPIENT_CACHE_SECONDS": env_float("INBOX_RECIPIENT_CACHE_SECONDS", 300.0),
    "GROUP_COMMIT_MAX": env_int("INBOX_GROUP_COMMIT_MAX", 32),
    "GROUP_COMMIT_STALL_SECONDS": env_float("INBOX_GROUP_COMMIT_STALL_SECONDS", 0.1),
}
