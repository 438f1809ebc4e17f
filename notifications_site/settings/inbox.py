"""The notification domain: the INBOX dict (inbox/conf.py has every key's default and meaning)."""

import json
import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from ..env import env_float, env_int


def _trusted_issuers_from_env() -> list:
    """INBOX_TRUSTED_ISSUERS: a JSON list of issuers (the entries are checked by inbox/trusted_issuers.py)."""
    raw = os.environ.get("INBOX_TRUSTED_ISSUERS", "").strip()
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"INBOX_TRUSTED_ISSUERS is not valid JSON ({exc}): it must be a JSON list of issuers, see docs/integration.md.") from None
    if not isinstance(value, list):
        raise ImproperlyConfigured("INBOX_TRUSTED_ISSUERS must be a JSON list of issuers ([{\"iss\": ..., \"alg\": ..., ...}]), see docs/integration.md.")
    return value


def _allowed_origins_from_env() -> list[str]:
    """INBOX_ALLOWED_ORIGINS: comma-separated origins, each scheme://host[:port] (a trailing / is dropped)."""
    origins = []
    for item in os.environ.get("INBOX_ALLOWED_ORIGINS", "").split(","):
        item = item.strip().rstrip("/")
        if not item:
            continue
        try:
            parts = urlsplit(item)
            parts.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.hostname.startswith(".")
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username is not None
            or "*" in item
        ):
            raise ImproperlyConfigured(
                f"INBOX_ALLOWED_ORIGINS: {item!r} is not an origin. Give each as scheme://host[:port], "
                "e.g. https://app.example.com, separated by commas (no path, no wildcard)."
            )
        origins.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return origins


def _retention_from_env() -> dict:
    """INBOX_RETENTION_DAYS, INBOX_JOURNAL_RETENTION_DAYS, INBOX_PURGE_*: checked by inbox/retention_settings.py."""
    from inbox.retention_settings import parse_retention_days

    journal = parse_retention_days(os.environ.get("INBOX_JOURNAL_RETENTION_DAYS", "30"), name="INBOX_JOURNAL_RETENTION_DAYS")
    if isinstance(journal, dict):
        raise ImproperlyConfigured("INBOX_JOURNAL_RETENTION_DAYS is one number of days (30), or 'forever'.")
    try:
        batch, every = env_int("INBOX_PURGE_BATCH_SIZE", 1_000), env_float("INBOX_PURGE_EVERY_SECONDS", 60)
        grace = env_float("INBOX_EXPIRED_GRACE_SECONDS", 0)
    except ValueError as exc:
        raise ImproperlyConfigured(f"INBOX_PURGE_BATCH_SIZE, INBOX_PURGE_EVERY_SECONDS, INBOX_EXPIRED_GRACE_SECONDS: {exc}") from None
    return {
        "RETENTION_DAYS": parse_retention_days(os.environ.get("INBOX_RETENTION_DAYS", "")),
        "JOURNAL_RETENTION_DAYS": journal,
        "PURGE_BATCH_SIZE": batch,
        "PURGE_EVERY_SECONDS": every,
        "EXPIRED_GRACE_SECONDS": grace,
    }


INBOX = {
    # Product limits.
    "MAX_RECIPIENTS": env_int("INBOX_MAX_RECIPIENTS", 10_000),
    "MAX_BODY_BYTES": env_int("INBOX_MAX_BODY_BYTES", 1024 * 1024),
    "CATCHUP_MAX": env_int("INBOX_CATCHUP_MAX", 10_000),
    "PASSWORD_CHECKS": env_int("INBOX_PASSWORD_CHECKS", 2),
    # The open tab first; then Web Push and e-mail for what no device took (inbox/fallback/, docs/fallbacks.md).
    "DELIVERY_BACKENDS": ["realtime.delivery.WebSocketBackend", "inbox.fallback.FallbackScheduler"],
    # Tokens the product signs (docs/integration.md) and the product's web origins (CORS, WebSocket Origin).
    "TRUSTED_ISSUERS": _trusted_issuers_from_env(),
    "ALLOWED_ORIGINS": _allowed_origins_from_env(),
    # Tuning (docs/performance.md).
    "DIRECTORY_CACHE_SECONDS": env_float("INBOX_DIRECTORY_CACHE_SECONDS", 5.0),
    "RECIPIENT_CACHE_SECONDS": env_float("INBOX_RECIPIENT_CACHE_SECONDS", 300.0),
    "GROUP_COMMIT_MAX": env_int("INBOX_GROUP_COMMIT_MAX", 32),
    "GROUP_COMMIT_STALL_SECONDS": env_float("INBOX_GROUP_COMMIT_STALL_SECONDS", 0.1),
    # Retention and the purge (docs/feed.md#retention).
    **_retention_from_env(),
}
