"""Users, send permissions and recipients are remembered per process for a few seconds, and forgotten when they change."""

from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inbox import directory, selectors
from inbox.models import Notification


def _send(client, recipient, title="t"):
    return client.post("/api/notifications/", {"recipient": recipient, "title": title}, format="json")


def _frozen_clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("inbox.directory.time.monotonic", lambda: now[0])
    return now


def test_a_second_send_asks_the_database_about_users_only_in_the_write_itself(sender_client, alice):
    assert _send(sender_client, "alice").status_code == 201
    with CaptureQueriesContext(connection) as queries:
        assert _send(sender_client, "alice").status_code == 201
    # (The test runs in a transaction, so the PostgreSQL call is wrapped in a savepoint.)
    sql = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    # No lookup of the sender, their permission or the recipient: only the write's own check
    # that the recipient is still active (inside the insert function on PostgreSQL).
    if connection.vendor == "postgresql":
        assert len(sql) == 1 and "inbox_notification_insert(" in sql[0]
    else:
        about_users = [s for s in sql if "auth_user" in s or "auth_permission" in s]
        assert len(about_users) == 1
        assert "is_active" in about_users[0]


def test_recipients_all_remembered_are_resolved_without_opening_a_cursor(alice, bob, monkeypatch):
    selectors.user_resolve_recipients(refs=[alice.pk, "bob"])

    def refuse():
        raise AssertionError("opened a cursor")

    with monkeypatch.context() as patched:  # undone before the test database is torn down
        patched.setattr(connection, "cursor", refuse)
        users, unknown = selectors.user_resolve_recipients(refs=["bob", alice.pk, "bob"])
    assert [u.pk for u in users] == [bob.pk, alice.pk] and unknown == []


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
    settings.INBOX = {**settings.INBOX, "DIRECTORY_CACHE_SECONDS": 0, "RECIPIENT_CACHE_SECONDS": 0}
    assert _send(sender_client, "alice").status_code == 201
    assert len(directory.users) == len(directory.recipients) == len(directory.send_permissions) == 0


def test_a_recipient_deactivated_elsewhere_is_refused_at_once_though_remembered(sender_client, alice, bob):
    assert _send(sender_client, "alice").status_code == 201
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)  # no signal: another process
    response = _send(sender_client, "alice")
    assert response.status_code == 400
    assert response.json() == {"recipient": ["Unknown or inactive recipient(s): 'alice'"]}
    # A bulk send naming her stores nothing for anyone.
    response = sender_client.post("/api/notifications/", {"recipients": ["bob", "alice"], "title": "t"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"recipients": ["Unknown or inactive recipient(s): 'alice'"]}
    assert Notification.objects.filter(recipient=alice).count() == 1
    assert not Notification.objects.filter(recipient=bob).exists()


def test_a_recipient_deleted_elsewhere_is_a_400_not_a_500(sender_client, make_user):
    dave = make_user("dave")
    assert selectors.user_resolve_recipients(refs=["dave"])[0]  # remembered now
    with connection.cursor() as cursor:  # another process deletes him: no signal here
        cursor.execute(f"DELETE FROM {get_user_model()._meta.db_table} WHERE id = %s", [dave.pk])
    assert directory.recipients.get("dave") is not None
    response = _send(sender_client, "dave")
    assert response.status_code == 400
    assert response.json() == {"recipient": ["Unknown or inactive recipient(s): 'dave'"]}
    assert Notification.objects.count() == 0


def test_recipients_are_remembered_longer_than_senders(sender_client, service_account, alice, monkeypatch, settings):
    now = _frozen_clock(monkeypatch)
    assert _send(sender_client, "alice").status_code == 201
    assert directory.send_permissions.get(service_account.pk) is True
    now[0] += settings.INBOX["DIRECTORY_CACHE_SECONDS"] + 0.1
    assert directory.recipients.get("alice") is not None
    assert directory.send_permissions.get(service_account.pk) is None
    now[0] += settings.INBOX["RECIPIENT_CACHE_SECONDS"]
    assert directory.recipients.get("alice") is None
