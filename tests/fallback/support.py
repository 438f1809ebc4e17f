"""Helpers of the fallback tests: send, let time pass on the schedule, run what is due, a real SMTP server."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import timedelta
from unittest import mock
from email import message_from_bytes, policy as email_policy

from django.utils import timezone


def send(recipients, *, title="Hello", category="general", **fields):
    """A real send through the service, its after-commit delivery (the scheduler among it) run."""
    from django.test import TestCase

    from inbox.services import notification_create

    with TestCase.captureOnCommitCallbacks(execute=True):
        return notification_create(recipients=list(recipients), title=title, category=category, **fields)


@contextmanager
def one_flush(settings):
    """
    The sends inside are scheduled together when it ends, as the background writer schedules the
    sends that arrive while it inserts: their groups handed over, then one ``schedule_entries``.
    """
    from inbox.fallback import scheduler

    groups: list = []
    settings.INBOX = {**settings.INBOX, "FALLBACK_SCHEDULE_IN_BACKGROUND": True}
    with mock.patch.object(scheduler.writer, "add", groups.extend):
        yield
    settings.INBOX = {**settings.INBOX, "FALLBACK_SCHEDULE_IN_BACKGROUND": False}
    scheduler.insert_tasks(scheduler.schedule_entries(groups))


def scheduled(task_name: str | None = None):
    """The fallbacks' READY task rows (optionally of one task), soonest first (not the retention purge's)."""
    from django_tasks_db.models import DBTaskResult

    qs = DBTaskResult.objects.filter(status="READY", task_path__startswith="inbox.fallback.tasks.").order_by("run_after", "enqueued_at")
    if task_name:
        qs = qs.filter(task_path=f"inbox.fallback.tasks.{task_name}")
    return list(qs)


def time_passes(seconds: float) -> int:
    """Everything scheduled within ``seconds`` from now becomes due now (the schedule's clock moves)."""
    from django_tasks_db.models import DBTaskResult

    now = timezone.now()
    return (
        DBTaskResult.objects.filter(status="READY", task_path__startswith="inbox.fallback.tasks.")
        .filter(run_after__lte=now + timedelta(seconds=seconds))
        .update(run_after=now)
    )


def run_due() -> list[dict]:
    """Run every due task as django-tasks-db's worker does (claim, call, record), in this thread."""
    from django_tasks_db.models import DBTaskResult

    results = []
    while True:
        row = DBTaskResult.objects.ready().filter(task_path__startswith="inbox.fallback.tasks.").first()
        if row is None:
            return results
        row.claim("test-worker")
        value = row.task.call(*row.args_kwargs["args"], **row.args_kwargs["kwargs"])
        row.set_successful(value)
        results.append({"task": row.task_path.rsplit(".", 1)[1], **value})


def outcomes(results, task_name: str) -> list[str]:
    """
    The outcome of each notification the runs of ``task_name`` (``push_fallback``) handled: its own
    runs', and each counted in the results of its batch task (``push_fallbacks``), batch by batch.
    """
    found = []
    for r in results:
        if r["task"] == task_name:
            found.append(r["outcome"])
        elif r["task"] == task_name + "s":
            found.extend(outcome for outcome, count in r["done"].items() for _ in range(count))
    return found


def scheduled_ids(task_name: str) -> list[int]:
    """The notification ids of the READY rows of a batch task (``push_fallbacks``), sorted."""
    return sorted(nid for r in scheduled(task_name) for nid in r.args_kwargs["kwargs"]["notification_ids"])


class SMTPServer:
    """A real SMTP server (aiosmtpd) on a free loopback port, in a thread; ``messages`` are parsed e-mails."""

    def __init__(self, port: int):
        self.port = port
        self.messages: list = []
        self.envelopes: list = []
        self._lock = threading.Lock()
        self.controller = None

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        with self._lock:
            self.envelopes.append(envelope)
            self.messages.append(message_from_bytes(envelope.original_content, policy=email_policy.default))
        return "250 OK"

    def start(self) -> "SMTPServer":
        from aiosmtpd.controller import Controller

        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
