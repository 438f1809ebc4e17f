"""The delivery port: committed events reach every configured backend, once, and never for a rollback."""

import logging

import pytest
from django.db import transaction

from inbox import delivery, services
from inbox.delivery import locmem
from inbox.events import NotificationsDeleted, NotificationsRead, NotificationsSent
from inbox.models import Notification, Tombstone

RECORDING = "inbox.delivery.locmem.RecordingBackend"


class BrokenBackend(delivery.DeliveryBackend):
    def deliver(self, events):
        raise RuntimeError("the carrier is down")


@pytest.fixture
def outbox(settings):
    settings.INBOX = {**settings.INBOX, "DELIVERY_BACKENDS": [RECORDING]}
    locmem.outbox.clear()
    yield locmem.outbox
    locmem.outbox.clear()


def test_the_backends_are_the_ones_named_in_settings(outbox):
    assert [type(b).__name__ for b in delivery.backends()] == ["RecordingBackend"]


def test_a_send_is_announced_once_after_its_commit(outbox, alice, bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        created = services.notification_create(recipients=[alice, bob], title="Hi")
    assert len(outbox) == 1
    event = outbox[0]
    assert isinstance(event, NotificationsSent)
    assert list(event.ids) == [n.id for n in created]
    assert list(event.recipient_ids) == [alice.pk, bob.pk]
    assert dict(event.unread) == {alice.pk: 1, bob.pk: 1}


def test_a_rolled_back_send_announces_nothing(outbox, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            services.notification_create(recipients=[alice], title="never")
            raise RuntimeError("rollback")
    assert outbox == []


def test_reads_and_deletes_are_announced_with_the_new_unread_count(outbox, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first, second = (n.id for n in services.notification_create(recipients=[alice], title="a") + services.notification_create(recipients=[alice], title="b"))
        services.notification_mark_read(user=alice, ids=[first])
        services.notification_delete(user=alice, ids=[second])
    read, deleted = outbox[2], outbox[3]
    # Each carries its step in alice's change journal (inbox/store/journal.py).
    assert read == NotificationsRead(user_id=alice.pk, ids=[first], read=True, unread=1, seq=Notification.objects.get(pk=first).seq)
    assert deleted == NotificationsDeleted(user_id=alice.pk, ids=[second], unread=0, seq=Tombstone.objects.get(notification_id=second).seq)
    assert first < read.seq < deleted.seq


def test_a_failing_backend_is_logged_and_the_others_still_get_the_event(settings, alice, caplog, django_capture_on_commit_callbacks):
    settings.INBOX = {**settings.INBOX, "DELIVERY_BACKENDS": [f"{__name__}.BrokenBackend", RECORDING]}
    locmem.outbox.clear()
    with caplog.at_level(logging.ERROR, logger="inbox.delivery"), django_capture_on_commit_callbacks(execute=True):
        created = services.notification_create(recipients=[alice], title="stored anyway")
    assert [e.ids for e in locmem.outbox] == [[created[0].id]]
    assert "BrokenBackend could not deliver 1 event(s)" in caplog.text
    locmem.outbox.clear()
