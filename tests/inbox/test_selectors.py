"""Selectors (reads) called directly, as other code and the WebSocket consumer do."""

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inbox import selectors
from tests.factories import make_notification, make_notifications

def test_user_resolve_recipients_maps_ids_and_usernames(alice, bob, make_user):
    make_user("gone", is_active=False)
    users, unknown = selectors.user_resolve_recipients(refs=["alice", bob.pk, "alice", alice.pk, "gone", 999_999, "nobody"])
    assert [u.pk for u in users] == [alice.pk, bob.pk]
    assert unknown == ["gone", 999_999, "nobody"]


def test_the_unread_counts_of_many_users_in_one_query(alice, bob, make_user):
    carol = make_user("carol")
    make_notifications(alice, 2)
    make_notification(alice, read_at=timezone.now())
    make_notification(bob, expires_at=timezone.now() - timedelta(seconds=1))
    make_notification(bob)
    with CaptureQueriesContext(connection) as queries:
        counts = selectors.notification_unread_counts(user_ids=[alice.pk, bob.pk, carol.pk, alice.pk])
    assert counts == {alice.pk: 2, bob.pk: 1, carol.pk: 0}
    assert len(queries) == 1


def test_catchup_returns_what_was_missed_oldest_first(alice, bob):
    created = make_notifications(alice, 5)
    make_notifications(bob, 2)
    make_notification(alice, expires_at=timezone.now() - timedelta(seconds=1))
    after = created[1].id
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=after, limit=100)] == [n.id for n in created[2:]]
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=after, limit=2)] == [created[2].id, created[3].id]
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=after, limit=100, upto=created[3].id)] == [
        created[2].id, created[3].id,
    ]


def test_catchup_of_pending_notifications_skips_the_acknowledged_ones(alice):
    delivered = make_notification(alice, delivered_at=timezone.now())
    pending = make_notification(alice)
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=None, limit=10, pending=True)] == [pending.id]
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=None, limit=10)] == [delivered.id, pending.id]


def test_the_newest_id(alice, bob):
    assert selectors.notification_newest_id(user_id=alice.pk) == 0
    created = make_notifications(alice, 3)
    make_notification(bob)
    assert selectors.notification_newest_id(user_id=alice.pk) == created[-1].id
