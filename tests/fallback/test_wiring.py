"""The fallbacks are part of the service: its settings schedule them, its URLs serve their API and links, a host gets them too."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import include, path, reverse

from inbox.fallback import mail, push

from .support import scheduled, send

ROOT = Path(__file__).resolve().parents[2]
urlpatterns = [path("inbox/", include("inbox.urls"))]  # a host project mounting Inbox under /inbox/


def test_the_service_settings_schedule_the_fallbacks_after_the_open_tab_on_the_database_task_backend():
    service = importlib.import_module("notifications_site.settings")
    assert service.INBOX["DELIVERY_BACKENDS"] == ["realtime.delivery.WebSocketBackend", "inbox.fallback.FallbackScheduler"]
    assert service.TASKS["default"]["BACKEND"] == "django_tasks_db.DatabaseBackend"
    assert service.INBOX["PUSH_AFTER_SECONDS"] == 30 and service.INBOX["EMAIL_AFTER_SECONDS"] == 900


def test_the_in_process_test_settings_leave_the_scheduler_out_and_never_write_from_a_thread():
    test_settings = importlib.import_module("notifications_site.settings_test")
    assert "inbox.fallback.FallbackScheduler" not in test_settings.INBOX["DELIVERY_BACKENDS"]
    assert test_settings.INBOX["FALLBACK_SCHEDULE_IN_BACKGROUND"] is False


def test_the_project_urls_serve_preferences_push_subscriptions_and_the_signed_links(client_for, alice, anon_client):
    assert reverse("preferences") == "/api/preferences/"
    assert reverse("push-subscriptions") == "/api/push-subscriptions/"
    assert reverse("inbox-push-ack") == "/push/ack/"
    assert reverse("inbox-unsubscribe", args=["x"]) == "/email/unsubscribe/x/"
    client = client_for(alice)
    assert client.get("/api/preferences/").json()["categories"] == {}
    assert client.get("/api/push-subscriptions/").json()["subscriptions"] == []
    assert anon_client.get("/api/preferences/").status_code == 401
    assert anon_client.get("/api/push-subscriptions/").status_code == 401


def test_a_send_through_the_service_schedules_both_fallbacks(alice):
    n = send([alice], title="Hello")[0]
    assert sorted(r.task_path.rsplit(".", 1)[1] for r in scheduled()) == ["email_fallbacks", "push_fallbacks"]
    assert [r.args_kwargs["kwargs"]["notification_ids"] for r in scheduled()] == [[n.pk], [n.pk]]


@pytest.mark.urls(__name__)
def test_a_host_including_inbox_urls_gets_the_links_under_its_prefix_and_the_push_names_its_ack_url(alice):
    assert reverse("preferences") == "/inbox/api/preferences/"
    assert mail.unsubscribe_path(user_id=alice.pk, categories=["order"]).startswith("/inbox/email/unsubscribe/")
    n = send([alice], title="Hello")[0]
    import orjson

    assert orjson.loads(push.payload(n))["ack_url"] == "/inbox/push/ack/"


def _service_settings(**env) -> subprocess.CompletedProcess:
    code = "import django; django.setup(); from django.conf import settings as s; import json; print(json.dumps({k: s.INBOX[k] for k in ('PUSH_AFTER_SECONDS_BY_CATEGORY', 'EMAIL_AFTER_SECONDS_BY_CATEGORY', 'CRITICAL_CATEGORIES', 'PREFERENCE_CATEGORIES')}), s.EMAIL_BACKEND)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "notifications_site.settings", **env},
    )


def test_the_policy_per_category_and_the_critical_categories_come_from_the_environment():
    run = _service_settings(
        INBOX_PUSH_AFTER_SECONDS_BY_CATEGORY="security=0, digest=3600",
        INBOX_EMAIL_AFTER_SECONDS_BY_CATEGORY="digest=86400",
        INBOX_CRITICAL_CATEGORIES="security,billing",
        INBOX_PREFERENCE_CATEGORIES="order,marketing",
        EMAIL_HOST="smtp.example.com",
    )
    assert run.returncode == 0, run.stderr
    values, backend = run.stdout.rsplit(" ", 1)
    assert json.loads(values) == {
        "PUSH_AFTER_SECONDS_BY_CATEGORY": {"security": 0.0, "digest": 3600.0},
        "EMAIL_AFTER_SECONDS_BY_CATEGORY": {"digest": 86400.0},
        "CRITICAL_CATEGORIES": ["security", "billing"],
        "PREFERENCE_CATEGORIES": ["order", "marketing"],
    }
    assert backend.strip() == "django.core.mail.backends.smtp.EmailBackend"


def test_development_without_a_mail_server_prints_the_emails_and_production_uses_smtp():
    env = {k: v for k, v in os.environ.items() if k != "EMAIL_HOST"}
    dev = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; print(s.EMAIL_BACKEND)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**env, "DJANGO_SETTINGS_MODULE": "notifications_site.settings", "DJANGO_DEBUG": "1"},
    )
    prod = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings as s; print(s.EMAIL_BACKEND)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**env, "DJANGO_SETTINGS_MODULE": "notifications_site.settings", "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "x" * 50},
    )
    assert dev.stdout.strip() == "django.core.mail.backends.console.EmailBackend", dev.stderr
    assert prod.stdout.strip() == "django.core.mail.backends.smtp.EmailBackend", prod.stderr


@pytest.mark.parametrize("value", ["security", "security=soon", "=5", "digest=-1"])
def test_a_malformed_per_category_delay_stops_the_service_at_start_naming_the_variable(value):
    run = _service_settings(INBOX_PUSH_AFTER_SECONDS_BY_CATEGORY=value)
    assert run.returncode != 0
    assert "INBOX_PUSH_AFTER_SECONDS_BY_CATEGORY" in run.stderr and "category=seconds" in run.stderr
