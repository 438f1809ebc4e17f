"""The real ``manage.py inbox_worker`` process: the schedule is rows, so a killed worker loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests import services as ext

from .support import scheduled, send, time_passes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dana(make_user):
    user = make_user("dana")
    user.email = "dana@example.com"
    user.save()
    return user


class Worker:
    def __init__(self, smtp_port: int, log: Path):
        self.smtp_port, self.log_path, self.proc = smtp_port, log, None

    def start(self) -> "Worker":
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "notifications_site.settings",
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": ext.database_url_for_subprocess(),
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(self.smtp_port),
            "INBOX_PUBLIC_URL": "http://inbox.example.com",
            "PYTHONUNBUFFERED": "1",
        }
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "inbox_worker", "--interval", "0.2", "--no-startup-delay"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while "Starting worker" not in self.log_path.read_text(errors="replace"):
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        return self

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(10)
        finally:
            self.log.close()


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.e2e
def test_the_schedule_survives_a_killed_worker_and_the_next_one_sends_one_batched_email(
    transactional_db, dana, smtp_server, tmp_path
):
    for title in ("Invoice paid", "Build failed", "New comment"):
        send([dana], title=title)
    assert len(scheduled("email_fallbacks")) == 3  # one row per send: each was scheduled on its own

    first = Worker(smtp_server.port, tmp_path / "worker-1.log").start()
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # killed with everything still scheduled
    assert len(scheduled("email_fallbacks")) == 3

    time_passes(900)
    second = Worker(smtp_server.port, tmp_path / "worker-2.log").start()
    try:
        wait_for(lambda: not scheduled())
        wait_for(lambda: len(smtp_server.messages) >= 1)
        time.sleep(0.5)  # anything more would arrive now
    finally:
        assert second.stop() == 0  # SIGTERM: a clean exit
    assert len(smtp_server.messages) == 1
    text = smtp_server.messages[0].get_body(("plain",)).get_content()
    assert all(t in text for t in ("Invoice paid", "Build failed", "New comment"))
    from django_tasks_db.models import DBTaskResult

    fallbacks = DBTaskResult.objects.filter(task_path__startswith="inbox.fallback.tasks.")
    assert fallbacks.filter(status="SUCCESSFUL").count() == 6  # three push batches (no subscription), three e-mail batches
    results = [r.return_value for r in fallbacks.filter(task_path="inbox.fallback.tasks.email_fallbacks")]
    assert sorted(outcome for r in results for outcome in r["done"]) == ["already", "already", "sent"]
    assert settings.TASKS["default"]["BACKEND"] == "django_tasks_db.DatabaseBackend"
