"""Sending (inbox/services/sending.py) called directly, as other code does: rows, order, refusals, queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inbox import services
from inbox.models import Notification
from tests.factories import make_users

def test_notification_create_returns_one_row_per_recipient_in_order(alice, bob, service_account):
    created = services.notification_create(
        recipients=[bob, alice], title="T", message="M", category="ops", data={"k": 1}, link="https://e.com", sender=service_account
    )
    assert [n.recipient_id for n in created] == [bob.pk, alice.pk]
    assert all(n.pk for n in created)
    assert created[0].id < created[1].id
    stored = Notification.objects.get(pk=created[0].id)
    assert (stored.title, stored.message, stored.category, stored.data, stored.link, stored.sender_id) == (
        "T", "M", "ops", {"k": 1}, "https://e.com", service_account.pk,
    )
    assert stored.created_at == created[1].created_at


def test_notification_create_refuses_a_recipient_who_is_no_longer_active_and_stores_nothing(alice, bob, pushed):
    bob.is_active = False
    bob.save()
    with pytest.raises(services.UnknownRecipients) as refused:
        services.notification_create(recipients=[alice, bob], title="T")
    assert [u.pk for u in refused.value.recipients] == [bob.pk]
    assert Notification.objects.count() == 0
    assert pushed == []


def test_notification_create_stores_one_row_per_recipient_given_twice(alice):
    created = services.notification_create(recipients=[alice, alice], title="T")
    assert len(created) == 2 and created[0].id < created[1].id
    assert Notification.objects.filter(recipient=alice).count() == 2


def test_notification_create_takes_as_many_queries_for_1000_recipients_as_for_10(db):
    users = make_users(1010)
    with CaptureQueriesContext(connection) as few:
        services.notification_create(recipients=users[:10], title="T")
    with CaptureQueriesContext(connection) as many:
        services.notification_create(recipients=users[10:], title="T")
    assert len(many) == len(few)
    assert Notification.objects.count() == 1010
