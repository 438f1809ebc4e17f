"""
The fallbacks' tasks (django-tasks): thin, so the library underneath can change. Each reads the
notification and the person's preferences when it runs (inbox/fallback/runner.py) and returns what
it did (stored as the task's result: ``{"outcome": "sent" | "read" | "acked" | "postponed" | ...}``).
"""

from __future__ import annotations

from django_tasks import task


@task()
def push_fallback(notification_id: int, attempt: int = 1) -> dict:
    """Web Push for a notification no device acked (``+PUSH_AFTER_SECONDS``)."""
    from .runner import run_push

    return run_push(notification_id=notification_id, attempt=attempt)


@task()
def email_fallback(notification_id: int, attempt: int = 1) -> dict:
    """One e-mail with everything of the person still unread (``+EMAIL_AFTER_SECONDS``)."""
    from .runner import run_email

    return run_email(notification_id=notification_id, attempt=attempt)
