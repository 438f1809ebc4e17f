"""Users, send permissions and recipients are remembered per process for a few seconds, and forgotten when they change."""

from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inbox import directory
from inbox.models import Notification


def _send(client, recipient, title="t"):
    return client.post("/api/notifications/", {"recipient": recipient, "title": title}, format="json")


def _frozen_clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("inbox.directory.time.monotonic", lambda: now[0])
    return now


def test_a_second_send_asks_the_database_nothing_about_users(sender_client, alice):
    assert _send(sender_client, "alice").status_code == 201
    with CaptureQueriesContext(connection) as queries:
        assert _send(sender_client, "alice").status_code == 201
    assert not [q for q in queries.captured_queries if "auth_user" in q["sql"] or "auth_permission" in q["sql"]]


def test_a_sender_deactivated_in_this_process_is_refused_at_once(sender_client, service_account, alice):
    assert _send(sender_client, "alice").status_code == 201
    service_account.is_active = False
    service_account.save()
    assert _send(sender_client, "alice").status_code == 401


def test_a_sender_deactivated_elsewhere_is_refused_once_the_period_is_over(sender_client, service_account, alice, monkeypatch, settings):
    now = _frozen_clock(monkeypatch)
    assert _send(sender_client, "alice").status_code == 201
    get_user_model().objects.filter(pk=service_account.pk).update(is_active=False)  # no signal: another process
    assert _send(sender_client, "alice").status_code == 201
    now[0] += settings.INBOX["DIRECTORY_CACHE_SECONDS"] + 0.1
    assert _send(sender_client, "alice").status_code == 401


def test_a_recipient_deactivated_in_this_process_gets_nothing_more(sender_client, alice):
    assert _send(sender_client, "alice").status_code == 201
    alice.is_active = False
    alice.save()
    response = _send(sender_client, "alice")
    assert response.status_code == 400
    assert "Unknown or inactive recipient" in response.json()["recipient"][0]
    assert Notification.objects.filter(recipient=alice).count() == 1


def test_an_unknown_recipient_is_not_remembered(sender_client, make_user):
    assert _send(sender_client, "carol").status_code == 400
    make_user("carol")
    assert _send(sender_client, "carol").status_code == 201


def test_a_zero_period_remembers_nothing(sender_client, alice, settings):
    settings.INBOX = {**settings.INBOX, "DIRECTORY_CACHE_SECONDS": 0}
    assert _send(sender_client, "alice").status_code == 201
    assert len(directory.users) == len(directory.recipients) == len(directory.send_permissions) == 0
