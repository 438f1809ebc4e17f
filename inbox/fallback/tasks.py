"""
The fallbacks' tasks (django-tasks): thin, so the library underneath can change. Each reads the
notification and the person's preferences when it runs (inbox/fallback/runner.py) and returns what
it did (stored as the task's result: ``{"outcome": "sent" | "read" | "acked" | "postponed" | ...}``).

The schedule (inbox/fallback/scheduler.py) writes the batch tasks, one row per channel, delay and
up to ``MAX_IDS_PER_TASK`` notifications; the single-id tasks carry quiet-hour postponements and
retries (and rows enqueued before the batches existed).
"""

from __future__ import annotations

from django_tasks import task


@task()
def push_fallbacks(notification_ids: list[int]) -> dict:
    """Web Push for each of a batch of notifications no device acked: ``{"outcome": "batch", "done": {...}}``."""
    from .runner import run_push_batch

    return run_push_batch(notification_ids=notification_ids)


@task()
def email_fallbacks(notification_ids: list[int]) -> dict:
    """The e-mail of each of a batch of notifications still unread (one per person, as ``email_fallback``)."""
    from .runner import run_email_batch

    return run_email_batch(notification_ids=notification_ids)


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
