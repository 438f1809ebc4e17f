"""
An operator's edit and an operator's resend, on the wire: an edit is a ``notification.updated``
frame that every socket of the recipient gets, a resend is a ``notification.created`` frame that
says ``"resend": true`` so that clients show it again instead of dropping an id they have.
"""

from __future__ import annotations

import orjson
import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from inbox import services
from inbox.events import NotificationsSaved, NotificationsUpdated
from inbox.models import Notification
from inbox.payloads import notification_payload
from inbox.services.sending import notification_push_updated
from realtime import protocol
from realtime.delivery import render

PAYLOAD = {"id": 7, "recipient": 3, "title": "After"}


# --- The frames (realtime/protocol.py) -----------------------------------------------------------


def test_an_updated_message_carries_the_whole_notification_and_the_count_as_it_is():
    message = protocol.updated_message(PAYLOAD, 2, 12)
    assert message["type"] == protocol.NOTIFICATION_UPDATED == "notification.updated"
    assert message["id"] == 7 and message["seq"] == 12
    assert orjson.loads(message["frame"]) == {"type": "notification.updated", "notification": PAYLOAD, "unread": 2, "seq": 12}


def test_a_resend_frame_says_so_and_a_first_send_does_not():
    assert orjson.loads(protocol.created_message(PAYLOAD, 1, resend=True)["frame"]) == {
        "type": "notification.created", "notification": PAYLOAD, "unread": 1, "seq": 7, "resend": True
    }
    assert "resend" not in orjson.loads(protocol.created_message(PAYLOAD, 1)["frame"])


# --- The backend (realtime/delivery.py) ------------------------------------------------------------


@pytest.mark.django_db
def test_the_backend_renders_an_edit_for_its_recipient_only(alice, bob):
    n = Notification.objects.create(recipient=alice, title="After")
    [(user_id, message)] = render(NotificationsUpdated(notifications=[n], unread={alice.pk: 1}))
    assert user_id == alice.pk
    assert orjson.loads(message["frame"]) == {"type": "notification.updated", "notification": notification_payload(n), "unread": 1, "seq": n.seq}


@pytest.mark.django_db
def test_an_edit_of_an_expired_notification_is_not_pushed(alice):
    n = Notification.objects.create(recipient=alice, title="Gone", expires_at=timezone.now() - timezone.timedelta(minutes=1))
    assert render(NotificationsUpdated(notifications=[n], unread={alice.pk: 0})) == []


@pytest.mark.django_db
def test_the_backend_marks_a_resends_frame(alice):
    n = Notification.objects.create(recipient=alice, title="Again")
    [(_, message)] = render(NotificationsSaved(notifications=[n], unread={alice.pk: 1}, resend=True))
    assert orjson.loads(message["frame"])["resend"] is True


# --- On a socket (the consumer) ----------------------------------------------------------------------


@database_sync_to_async
def edit_title(pk: int, title: str) -> Notification:
    """What the admin's change form does: save the row, then announce the edit after commit."""
    with transaction.atomic():
        n = Notification.objects.get(pk=pk)
        n.title = title
        n.save()
        notification_push_updated(notification=n)
    return n


@pytest.mark.django_db(transaction=True)
async def test_an_edit_reaches_every_open_socket_of_the_recipient_even_after_its_catch_up(connected, send, alice, bob):
    [n] = await send(alice, title="Before")
    tab1 = await connected(alice)  # its catch-up sent n: a late created frame would be dropped there
    tab2 = await connected(alice, after=0)
    bobs = await connected(bob)
    await edit_title(n.id, "After")
    for tab in (tab1, tab2):
        frame = await tab.frame()
        assert frame["type"] == "notification.updated"
        assert frame["notification"]["id"] == n.id and frame["notification"]["title"] == "After"
        assert frame["unread"] == 1  # the same count: an edit is not a new notification
    assert await bobs.silent()


@pytest.mark.django_db(transaction=True)
async def test_a_resend_reaches_a_socket_that_has_the_notification_marked_as_a_resend(connected, send, alice):
    [n] = await send(alice, title="Again")
    sock = await connected(alice, after=0)
    row = await database_sync_to_async(Notification.objects.get)(pk=n.id)
    await database_sync_to_async(services.notification_resend)(notifications=[row])
    frame = await sock.frame()
    assert frame["type"] == "notification.created"
    assert frame["notification"]["id"] == n.id
    assert frame["resend"] is True
