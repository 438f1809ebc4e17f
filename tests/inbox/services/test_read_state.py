"""Read state (inbox/services/read_state.py, deleting.py) called directly, and the state a row's timestamps give it."""

from datetime import timedelta

from django.utils import timezone

from inbox import services
from tests.factories import make_notification, make_notifications

def test_ack_sets_delivered_at_once_and_only_for_the_owner(alice, bob):
    mine = make_notification(alice)
    theirs = make_notification(bob)
    assert services.notification_ack(user=alice, ids=[mine.id, theirs.id]) == [mine.id]
    mine.refresh_from_db()
    first = mine.delivered_at
    assert first is not None
    assert services.notification_ack(user=alice, ids=[mine.id]) == []
    mine.refresh_from_db()
    assert mine.delivered_at == first
    theirs.refresh_from_db()
    assert theirs.delivered_at is None
    assert mine.state == "delivered"


def test_mark_read_and_delete_ignore_other_users_ids(alice, bob, pushed, django_capture_on_commit_callbacks):
    theirs = make_notification(bob)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.notification_mark_read(user=alice, ids=[theirs.id]) == []
        assert services.notification_delete(user=alice, ids=[theirs.id]) == []
    theirs.refresh_from_db()
    assert theirs.read_at is None
    assert pushed == []


def test_mark_read_handles_at_most_the_id_limit(alice, settings):
    settings.INBOX = {**settings.INBOX, "MAX_IDS_PER_REQUEST": 3}
    created = make_notifications(alice, 5)
    changed = services.notification_mark_read(user=alice, ids=[n.id for n in created])
    assert changed == [n.id for n in created[:3]]


def test_the_state_follows_the_timestamps(alice):
    n = make_notification(alice)
    assert n.state == "pending"
    n.delivered_at = timezone.now()
    assert n.state == "delivered"
    n.read_at = timezone.now()
    assert n.state == "read"
    assert not n.is_expired()
    n.expires_at = timezone.now() - timedelta(seconds=1)
    assert n.is_expired()
