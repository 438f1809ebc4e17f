"""
Every call point of the fan-out, with the exact number of events it sends (Zulip's rule): send
(single and bulk), read, unread, read-all, delete, a row saved one by one (post_save), and a
rolled-back transaction, which sends nothing. Admin actions and the notify command are counted
in test_admin.py and test_commands.py.
"""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from inbox import services
from inbox.models import Notification, Tombstone
from realtime import publisher
from tests.factories import make_notification, make_notifications


def step(n: Notification) -> int:
    """The row's step in its recipient's change journal now (inbox/store/journal.py)."""
    return Notification.objects.get(pk=n.pk).seq


def test_a_single_send_pushes_one_created_event_to_the_recipient(sender_client, alice, pushed, django_capture_on_commit_callbacks):
    make_notification(alice, read_at=timezone.now())
    make_notifications(alice, 2)
    with django_capture_on_commit_callbacks(execute=True):
        body = sender_client.post("/api/notifications/", {"recipient": "alice", "title": "Hi"}, format="json").json()
    assert len(pushed) == 1
    user_id, message = pushed[0]
    assert user_id == alice.pk
    assert message["type"] == "notification.created"
    assert message["notification"] == body
    assert message["unread"] == 3


def test_a_bulk_send_pushes_one_event_per_recipient(sender_client, alice, bob, make_user, pushed, django_capture_on_commit_callbacks):
    carol = make_user("carol")
    make_notifications(bob, 4)
    with django_capture_on_commit_callbacks(execute=True):
        ids = sender_client.post(
            "/api/notifications/", {"recipients": ["alice", "bob", "carol"], "title": "All"}, format="json"
        ).json()["ids"]
    assert len(pushed) == 3
    assert pushed.users() == [alice.pk, bob.pk, carol.pk]
    assert [m["notification"]["id"] for _, m in pushed] == ids
    assert {uid: m["unread"] for uid, m in pushed} == {alice.pk: 1, bob.pk: 5, carol.pk: 1}
    assert {m["notification"]["sender"] for _, m in pushed} == {"billing-service"}


def test_the_unread_count_pushed_with_a_send_leaves_out_expired_rows(alice, bob, pushed, django_capture_on_commit_callbacks):
    now = timezone.now()
    make_notification(alice, expires_at=now - timedelta(minutes=1))
    make_notification(alice, expires_at=now + timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        services.notification_create(recipients=[alice, bob], title="counted")
        services.notification_create(recipients=[alice], title="expires soon", expires_at=now + timedelta(days=1))
    assert [(uid, m["unread"]) for uid, m in pushed] == [(alice.pk, 2), (bob.pk, 1), (alice.pk, 3)]


def test_nothing_is_pushed_before_the_commit(sender_client, alice, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        sender_client.post("/api/notifications/", {"recipient": "alice", "title": "Hi"}, format="json")
    assert pushed == []
    assert len(callbacks) == 1


def test_a_rolled_back_send_pushes_nothing(alice, bob, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                services.notification_create(recipients=[alice, bob], title="Never")
                raise RuntimeError("roll back")
    assert callbacks == []
    assert pushed == []
    assert not Notification.objects.exists()


def test_a_rolled_back_read_pushes_nothing(alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                services.notification_mark_read(user=alice, ids=[n.id])
                raise RuntimeError("roll back")
    assert pushed == []
    n.refresh_from_db()
    assert n.read_at is None


def test_reading_pushes_one_read_event(alice_client, alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice)
    make_notification(alice)
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(f"/api/notifications/{n.id}/read/")
    assert pushed == [(alice.pk, {"type": "notification.read", "ids": [n.id], "read": True, "unread": 1, "seq": step(n)})]


def test_reading_an_already_read_notification_pushes_nothing(alice_client, alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice, read_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(f"/api/notifications/{n.id}/read/")
    assert pushed == []


def test_unreading_pushes_one_read_event_with_read_false(alice_client, alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice, read_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(f"/api/notifications/{n.id}/unread/")
        alice_client.post(f"/api/notifications/{n.id}/unread/")
    assert pushed == [(alice.pk, {"type": "notification.read", "ids": [n.id], "read": False, "unread": 1, "seq": step(n)})]


def test_read_all_pushes_one_event_with_every_changed_id(alice_client, alice, pushed, django_capture_on_commit_callbacks):
    created = make_notifications(alice, 3)
    make_notification(alice, read_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post("/api/notifications/read-all/")
        alice_client.post("/api/notifications/read-all/")
    assert pushed == [(alice.pk, {"type": "notification.read", "ids": [n.id for n in created], "read": True, "unread": 0, "seq": step(created[0])})]


def test_read_all_of_a_category_pushes_only_its_ids(alice_client, alice, pushed, django_capture_on_commit_callbacks):
    billing = make_notification(alice, category="billing")
    make_notification(alice, category="social")
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post("/api/notifications/read-all/", {"category": "billing"}, format="json")
    assert pushed == [(alice.pk, {"type": "notification.read", "ids": [billing.id], "read": True, "unread": 1, "seq": step(billing)})]


def test_deleting_pushes_one_deleted_event(alice_client, alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice)
    make_notification(alice)
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.delete(f"/api/notifications/{n.id}/")
    assert pushed == [(alice.pk, {"type": "notification.deleted", "ids": [n.id], "unread": 1, "seq": Tombstone.objects.get(notification_id=n.id).seq, "reason": "deleted"})]


def test_touching_another_users_notification_pushes_nothing(alice_client, bob, pushed, django_capture_on_commit_callbacks):
    n = make_notification(bob)
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(f"/api/notifications/{n.id}/read/")
        alice_client.delete(f"/api/notifications/{n.id}/")
        alice_client.post("/api/notifications/read-all/")
    assert pushed == []


def test_a_notification_saved_one_by_one_is_pushed_after_commit(alice, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        n = Notification.objects.create(recipient=alice, title="From the shell")
    assert len(pushed) == 1
    assert pushed[0][0] == alice.pk
    assert pushed[0][1]["type"] == "notification.created"
    assert pushed[0][1]["notification"]["id"] == n.id
    assert pushed[0][1]["unread"] == 1


def test_saving_an_existing_notification_again_pushes_nothing(alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice)
    with django_capture_on_commit_callbacks(execute=True):
        n.title = "Edited"
        n.save()
    assert pushed == []


def test_an_expired_notification_is_stored_but_not_pushed(alice, pushed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.notification_create(recipients=[alice], title="Old news", expires_at=timezone.now() - timedelta(seconds=1))
    assert Notification.objects.count() == 1
    assert pushed == []


def test_a_failing_channel_layer_never_fails_the_send(sender_client, alice, monkeypatch, django_capture_on_commit_callbacks):
    async def broken(events):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(publisher, "send_now", broken)
    with django_capture_on_commit_callbacks(execute=True):
        response = sender_client.post("/api/notifications/", {"recipient": "alice", "title": "Hi"}, format="json")
    assert response.status_code == 201
    assert Notification.objects.count() == 1


def test_events_go_to_the_recipients_group(alice):
    assert publisher.group_for_user(alice.pk) == f"inbox.user.{alice.pk}"
