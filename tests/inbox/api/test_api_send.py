"""POST /api/notifications/: send to one recipient or many (one bulk write), and who may send."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inbox.models import Notification
from tests.factories import make_users


def test_a_sender_sends_to_one_recipient_by_username(sender_client, alice, service_account):
    response = sender_client.post(
        "/api/notifications/",
        {
            "recipient": "alice",
            "title": "Invoice paid",
            "message": "Thank you",
            "category": "billing",
            "data": {"invoice": 42, "lines": [1, 2]},
            "link": "https://example.com/invoices/42",
        },
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    n = Notification.objects.get()
    assert body == {
        "id": n.id,
        "recipient": alice.pk,
        "sender": "billing-service",
        "category": "billing",
        "title": "Invoice paid",
        "message": "Thank you",
        "data": {"invoice": 42, "lines": [1, 2]},
        "link": "https://example.com/invoices/42",
        "created_at": body["created_at"],
        "delivered_at": None,
        "read_at": None,
        "expires_at": None,
        "state": "pending",
        # The feed's fields (issue 21).
        **{"key": "", "group": "", "actions": [], "seen_at": None, "archived_at": None, "interacted_at": None},
    }
    assert (n.recipient_id, n.sender_id, n.category, n.data) == (alice.pk, service_account.pk, "billing", {"invoice": 42, "lines": [1, 2]})


def test_a_sender_sends_to_one_recipient_by_id_with_defaults(sender_client, alice):
    response = sender_client.post("/api/notifications/", {"recipient": alice.pk, "title": "Hi"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["recipient"], body["category"], body["message"], body["data"], body["link"]) == (alice.pk, "general", "", {}, "")


def test_a_sent_notification_can_expire(sender_client, alice, alice_client):
    expires = timezone.now() + timedelta(hours=2)
    response = sender_client.post(
        "/api/notifications/", {"recipient": "alice", "title": "Flash sale", "expires_at": expires.isoformat()}, format="json"
    )
    assert response.status_code == 201
    assert Notification.objects.get().expires_at == expires
    assert response.json()["expires_at"].startswith(expires.strftime("%Y-%m-%dT%H:%M"))


def test_a_sender_sends_to_many_recipients_mixing_ids_and_usernames(sender_client, alice, bob, make_user):
    carol = make_user("carol")
    response = sender_client.post(
        "/api/notifications/", {"recipients": ["alice", bob.pk, "carol"], "title": "Maintenance tonight"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["count"] == 3
    rows = {n.id: n.recipient_id for n in Notification.objects.all()}
    assert [rows[i] for i in body["ids"]] == [alice.pk, bob.pk, carol.pk]


def test_duplicate_recipients_get_one_notification_each(sender_client, alice, bob):
    response = sender_client.post(
        "/api/notifications/", {"recipients": ["alice", alice.pk, "bob", "alice"], "title": "Once"}, format="json"
    )
    assert response.json()["count"] == 2
    assert sorted(Notification.objects.values_list("recipient_id", flat=True)) == sorted([alice.pk, bob.pk])


def test_the_recipients_see_what_was_sent(sender_client, alice_client, bob_client, alice, bob):
    ids = sender_client.post("/api/notifications/", {"recipients": ["alice", "bob"], "title": "Hello"}, format="json").json()["ids"]
    assert [n["id"] for n in alice_client.get("/api/notifications/").json()["results"]] == [ids[0]]
    assert [n["id"] for n in bob_client.get("/api/notifications/").json()["results"]] == [ids[1]]
    assert bob_client.get("/api/notifications/unread-count/").json() == {"unread": 1}


def test_a_user_without_the_send_permission_gets_403(alice_client, alice, bob):
    response = alice_client.post("/api/notifications/", {"recipient": "bob", "title": "Spam"}, format="json")
    assert response.status_code == 403
    assert not Notification.objects.exists()


def test_a_staff_user_without_the_permission_gets_403(client_for, make_user, bob):
    staff = make_user("staff-only", is_staff=True)
    response = client_for(staff).post("/api/notifications/", {"recipient": "bob", "title": "Hi"}, format="json")
    assert response.status_code == 403


def test_a_staff_superuser_may_send(client_for, staff_user, bob):
    response = client_for(staff_user).post("/api/notifications/", {"recipient": "bob", "title": "From ops"}, format="json")
    assert response.status_code == 201
    assert response.json()["sender"] == "operator"


def test_the_permission_can_come_from_a_group(client_for, alice, bob):
    from django.contrib.auth.models import Group, Permission

    group = Group.objects.create(name="senders")
    group.permissions.add(Permission.objects.get(codename="send_notification"))
    alice.groups.add(group)
    response = client_for(alice).post("/api/notifications/", {"recipient": "bob", "title": "Hi"}, format="json")
    assert response.status_code == 201


def test_an_inactive_recipient_is_unknown(sender_client, make_user):
    make_user("gone", is_active=False)
    response = sender_client.post("/api/notifications/", {"recipient": "gone", "title": "Hi"}, format="json")
    assert response.status_code == 400
    assert "recipient" in response.json()


def _send_to(client, users) -> CaptureQueriesContext:
    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            "/api/notifications/", {"recipients": [u.username for u in users], "title": "Bulk"}, format="json"
        )
    assert response.status_code == 201, response.content[:500]
    assert response.json()["count"] == len(users)
    return queries


def test_sending_to_many_recipients_is_one_bulk_write(sender_client):
    users = make_users(1010)
    _send_to(sender_client, users[:1])  # the sender's permission is looked up once, then cached
    few = _send_to(sender_client, users[:10])
    many = _send_to(sender_client, users[10:])
    assert len(many) == len(few), "\n".join(q["sql"][:200] for q in many.captured_queries)
    # PostgreSQL: one call of the insert function (inbox/store/sql/notification_insert.sql); SQLite: one INSERT.
    writes = [
        q for q in many.captured_queries
        if "INSERT INTO \"inbox_notification\"" in q["sql"] or "inbox_notification_insert(" in q["sql"]
    ]
    assert len(writes) == 1
    assert Notification.objects.count() == 1011


def test_sending_by_id_to_many_recipients_takes_as_many_queries_as_to_few(sender_client, django_assert_max_num_queries):
    users = make_users(1010)
    with CaptureQueriesContext(connection) as few:
        sender_client.post("/api/notifications/", {"recipients": [u.pk for u in users[:10]], "title": "Bulk"}, format="json")
    with django_assert_max_num_queries(len(few)):
        response = sender_client.post(
            "/api/notifications/", {"recipients": [u.pk for u in users[10:]], "title": "Bulk"}, format="json"
        )
    assert response.json()["count"] == 1000


def test_a_ten_thousand_recipient_send_works(sender_client, pushed, django_capture_on_commit_callbacks):
    users = make_users(10_000)
    with django_capture_on_commit_callbacks(execute=True):
        response = sender_client.post(
            "/api/notifications/", {"recipients": [u.username for u in users], "title": "Everyone"}, format="json"
        )
    assert response.status_code == 201
    body = response.json()
    assert body["count"] == 10_000
    assert len(set(body["ids"])) == 10_000
    assert Notification.objects.count() == 10_000
    assert len(pushed) == 10_000
    assert sorted(pushed.users()) == sorted(u.pk for u in users)


@pytest.mark.parametrize("field", ["recipient", "recipients"])
def test_a_sender_may_not_send_to_an_unknown_user(sender_client, alice, field):
    value = "nobody" if field == "recipient" else ["alice", "nobody"]
    response = sender_client.post("/api/notifications/", {field: value, "title": "Hi"}, format="json")
    assert response.status_code == 400
    assert "nobody" in response.json()[field][0]
    assert not Notification.objects.exists()


def test_a_send_permission_revoked_in_this_process_takes_effect_at_once(sender_client, service_account, alice):
    from django.contrib.auth.models import Permission

    def send(title):
        return sender_client.post("/api/notifications/", {"recipient": "alice", "title": title}, format="json").status_code

    assert send("before") == 201
    service_account.user_permissions.remove(Permission.objects.get(codename="send_notification"))
    assert send("after") == 403


def test_a_send_permission_revoked_elsewhere_takes_effect_within_the_cache_period(sender_client, service_account, alice, monkeypatch, settings):
    from django.contrib.auth import get_user_model

    now = [1000.0]
    monkeypatch.setattr("inbox.directory.time.monotonic", lambda: now[0])

    def send(title):
        return sender_client.post("/api/notifications/", {"recipient": "alice", "title": title}, format="json").status_code

    assert send("before") == 201
    # Another server process revokes it: a plain delete of the row sends no signal here.
    get_user_model().user_permissions.through.objects.filter(user=service_account).delete()
    assert send("still remembered") == 201
    now[0] += settings.INBOX["DIRECTORY_CACHE_SECONDS"] + 0.1
    assert send("after") == 403


@pytest.mark.django_db(transaction=True)
def test_a_send_without_an_idempotency_key_is_one_transaction_without_savepoints(sender_client, alice):
    sender_client.post("/api/notifications/", {"recipient": "alice", "title": "warm-up"}, format="json")
    with CaptureQueriesContext(connection) as queries:
        response = sender_client.post("/api/notifications/", {"recipient": "alice", "title": "Hello"}, format="json")
    assert response.status_code == 201
    assert not [q["sql"] for q in queries if "SAVEPOINT" in q["sql"].upper()]
    assert Notification.objects.filter(title="Hello").count() == 1
