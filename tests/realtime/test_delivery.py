"""
realtime.delivery: the WebSocket backend turns each committed domain event into channel-layer
messages (rendered by realtime.protocol) and publishes them, one publish per event.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from inbox import services
from inbox.events import NotificationsSent
from inbox.models import Notification
from realtime import delivery, publisher


@pytest.fixture
def published(monkeypatch):
    events: list[publisher.Event] = []
    monkeypatch.setattr(publisher, "publish", events.extend)
    return events


# --- One pipelined call per send -----------------------------------------------------------------


def test_a_bulk_send_is_one_group_send_many_call_with_one_event_per_recipient(calls, alice, bob, make_user, django_capture_on_commit_callbacks):
    carol = make_user("carol")
    with django_capture_on_commit_callbacks(execute=True):
        created = services.notification_create(recipients=[alice, bob, carol], title="Maintenance")
    assert len(calls) == 1
    [batch] = calls
    assert [group for group, _ in batch] == [publisher.group_for_user(u.pk) for u in (alice, bob, carol)]
    assert [m["id"] for _, m in batch] == [n.id for n in created]
    assert {m["type"] for _, m in batch} == {"notification.created"}


def test_a_send_that_expired_before_its_commit_pushes_nothing(alice, published):
    expired = Notification(recipient=alice, title="late", expires_at=timezone.now() - timedelta(seconds=1))
    event = NotificationsSent(template=expired, ids=[1], recipient_ids=[alice.pk], unread={}, sender_username=None)
    assert delivery.render(event) == []
    delivery.WebSocketBackend().deliver([event])
    assert published == []
