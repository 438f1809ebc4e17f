"""When each fallback runs and how long a failed one waits: the INBOX keys, per category."""

from __future__ import annotations

from ..conf import inbox_setting


def push_delay(category: str) -> float:
    """Seconds after the send before Web Push, if no device acked the notification."""
    return float(inbox_setting("PUSH_AFTER_SECONDS_BY_CATEGORY").get(category, inbox_setting("PUSH_AFTER_SECONDS")))


def email_delay(category: str) -> float:
    """Seconds after the send before the e-mail, if the notification is still unread."""
    return float(inbox_setting("EMAIL_AFTER_SECONDS_BY_CATEGORY").get(category, inbox_setting("EMAIL_AFTER_SECONDS")))


def retry_delay(attempt: int) -> float:
    """The wait before attempt ``attempt + 1``: FALLBACK_RETRY_SECONDS, doubled each time, capped."""
    base = float(inbox_setting("FALLBACK_RETRY_SECONDS"))
    return min(base * 2 ** max(attempt - 1, 0), float(inbox_setting("FALLBACK_RETRY_MAX_SECONDS")))


def may_retry(attempt: int) -> bool:
    return attempt < int(inbox_setting("FALLBACK_MAX_ATTEMPTS"))
