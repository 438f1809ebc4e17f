"""``from inbox import notify``: the Python API a host project calls, the REST send's service underneath."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from inbox.models import IdempotencyKey, Notification

pytestmark = pytest.mark.django_db(transaction=True)


def test_inbox_imports_before_django_is_set_up_and_gives_notify_lazily():
    code = "import inbox, sys; assert 'inbox.models' not in sys.modules; print(sorted(inbox.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PATH": ""})
    assert "notify" in out.stdout
    from inbox import notify
    from inbox.services.notify import notify as defined

    assert notify is defined


def test_a_notify_inside_a_transaction_is_pushed_once_it_commits(alice, pushed):
    from inbox import notify

    with transaction.atomic():
        n = notify(recipient=alice, title="Invoice paid", category="billing", data={"invoice": 7}, link="/invoices/7")
        assert pushed == []  # not before the commit
    assert Notification.objects.get(pk=n.id).title == "Invoice paid"
    [(user_id, frame)] = pushed.of_type("notification.created")
    assert user_id == alice.pk
    assert frame["notification"]["id"] == n.id and frame["notification"]["data"] == {"invoice": 7}


def test_a_rolled_back_notify_stores_nothing_and_pushes_nothing(alice, pushed):
    from inbox import notify

    with pytest.raises(RuntimeError), transaction.atomic():
        notify(recipient=alice, title="never")
        raise RuntimeError("the caller's transaction fails")
    assert not Notification.objects.exists()
    assert pushed == []


def test_recipients_may_be_users_or_primary_keys_and_a_repeated_one_gets_one_row(alice, bob, pushed):
    from inbox import notify

    created = notify(recipients=[alice, bob.pk, str(alice.pk)], title="Hello", sender=None)
    assert [n.recipient_id for n in created] == [alice.pk, bob.pk]
    assert sorted(pushed.users()) == sorted([alice.pk, bob.pk])


def test_an_inactive_or_unknown_recipient_is_refused_with_nothing_stored(alice, make_user, pushed):
    from inbox import UnknownRecipients, notify

    gone = make_user(is_active=False)
    with pytest.raises(UnknownRecipients):
        notify(recipients=[alice, gone], title="Hello")
    with pytest.raises(UnknownRecipients):
        notify(recipient=2**40, title="Hello")
    assert not Notification.objects.exists() and pushed == []


@pytest.mark.parametrize(
    "bad",
    [
        {"title": ""},
        {"title": "x" * 201},
        {"title": "a\x00b"},
        {"category": "not a slug"},
        {"data": ["not", "an", "object"]},
        {"data": {"big": "x" * 17_000}},
        {"data": {"n": float("nan")}},
        {"link": "javascript:alert(1)"},
        {"link": "//evil.example"},
        {"expires_at": timezone.now() - timedelta(seconds=1)},
        {"idempotency_key": "has space"},
        {"recipient": 1.5},
        {"recipient": True},
        {"recipients": []},
    ],
)
def test_a_bad_argument_is_a_value_error_naming_it_with_nothing_stored(alice, pushed, bad):
    from inbox import NotificationInvalid, notify

    kwargs = {"recipient": alice, "title": "ok", **bad}
    if "recipients" in bad:
        kwargs.pop("recipient")
    with pytest.raises(NotificationInvalid) as raised:
        notify(**kwargs)
    assert isinstance(raised.value, ValueError)
    assert set(raised.value.message_dict) == {next(iter(bad)) if "recipients" not in bad else "recipients"}
    assert not Notification.objects.exists() and pushed == []


def test_a_retry_with_the_same_key_returns_the_first_notifications_and_stores_nothing_new(alice, service_account, pushed):
    from inbox import notify

    first = notify(recipients=[alice], title="Order shipped", sender=service_account, idempotency_key="order-5")
    again = notify(recipients=[alice.pk], title="Order shipped", sender=service_account, idempotency_key="order-5")
    assert [n.id for n in again] == [n.id for n in first]
    assert Notification.objects.count() == 1
    assert len(pushed.of_type("notification.created")) == 1


def test_the_same_key_with_another_payload_is_a_conflict_with_nothing_stored(alice, pushed):
    from inbox import IdempotencyConflict, notify

    notify(recipient=alice, title="Order shipped", idempotency_key="order-5")
    with pytest.raises(IdempotencyConflict):
        notify(recipient=alice, title="Order lost", idempotency_key="order-5")
    assert list(Notification.objects.values_list("title", flat=True)) == ["Order shipped"]
    assert IdempotencyKey.objects.filter(sender=None, key="order-5").count() == 1


def test_keys_are_per_sender_so_a_senderless_key_and_a_senders_key_are_apart(alice, service_account):
    from inbox import notify

    notify(recipient=alice, title="A", idempotency_key="same")
    notify(recipient=alice, title="B", sender=service_account, idempotency_key="same")
    assert sorted(Notification.objects.values_list("title", flat=True)) == ["A", "B"]
