"""
What a socket's connect reads (inbox/store/connect.py): the same answers as the selectors and the
journal give, in one statement built once instead of six compiled by the ORM.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from inbox import directory, selectors, services
from inbox.models import JournalFloor, Notification, Tombstone
from inbox.payloads import notification_payload
from inbox.store import connect, journal, unread
from tests.factories import make_notification

pytestmark = pytest.mark.django_db


@pytest.fixture
def inbox(alice, bob, service_account):
    """Alice's notifications in every state (acked, read, expired, deleted, pending, from a sender), and one of Bob's."""
    a = services.notification_create(recipients=[alice], title="acked", sender=service_account, data={"k": [1, "é"]})[0]
    b = services.notification_create(recipients=[alice], title="read", link="/orders/5")[0]
    c = services.notification_create(recipients=[alice], title="expired", expires_at=timezone.now() - timedelta(minutes=1))[0]
    d = services.notification_create(recipients=[alice], title="deleted")[0]
    e = services.notification_create(recipients=[alice], title="expires later", expires_at=timezone.now() + timedelta(hours=1))[0]
    f = services.notification_create(recipients=[alice], title="plain", sender=service_account)[0]
    services.notification_create(recipients=[bob], title="bob's")
    services.notification_ack(user=alice, ids=[a.id])
    services.notification_mark_read(user=alice, ids=[b.id])
    services.notification_delete(user=alice, ids=[d.id])
    services.notification_mark_read(user=alice, ids=[f.id])  # a change after the deletion
    g = services.notification_create(recipients=[alice], title="pending", sender=service_account, data={"n": None})[0]
    return [a, b, c, d, e, f, g]


def catchup_payloads(user, **kwargs) -> list[dict]:
    return [notification_payload(n) for n in selectors.notification_catchup(user_id=user.pk, **kwargs)]


def as_compared(changes: list[journal.Change]) -> list[tuple]:
    return [(c.seq, c.id, c.reason, c.notification and notification_payload(c.notification)) for c in changes]


# --- The state ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", [connect.NONE, connect.PENDING, connect.AFTER, connect.JOURNAL])
def test_the_snapshot_reads_the_unread_count_newest_id_and_journal_position_the_selectors_read(inbox, alice, page):
    JournalFloor.objects.create(user=alice, seq=inbox[0].id)
    snap = connect.snapshot(alice.pk, page=page, after=0, since=0, limit=10)
    position = journal.position(alice.pk)
    assert (snap.unread, snap.newest, snap.floor, snap.top) == (
        selectors.notification_unread_count(user_id=alice.pk),
        selectors.notification_newest_id(user_id=alice.pk),
        position.floor,
        position.top,
    )
    assert (snap.unread, snap.newest) == (3, inbox[-1].id)  # acked, expires later, pending


def test_the_journals_top_is_its_last_deletion_or_its_floor_when_either_is_the_newest_step(alice):
    services.notification_delete(user=alice, ids=[make_notification(alice).id])
    deleted_at = Tombstone.objects.get(user=alice).seq
    assert connect.snapshot(alice.pk).top == journal.position(alice.pk).top == deleted_at
    JournalFloor.objects.create(user=alice, seq=deleted_at + 10)
    assert connect.snapshot(alice.pk, page=connect.JOURNAL, since=0, limit=10).top == journal.position(alice.pk).top == deleted_at + 10


def test_a_user_without_notifications_has_a_snapshot_of_zeros_and_empty_pages(alice):
    for page in (connect.NONE, connect.PENDING, connect.AFTER, connect.JOURNAL):
        snap = connect.snapshot(alice.pk, page=page, after=0, since=0, limit=10)
        assert snap == connect.Snapshot(True, 0, 0, 0, 0, 0, payloads=[], changes=[])


def test_the_unread_count_a_socket_reads_is_its_unread_unexpired_rows(inbox, alice, bob):
    for user in (alice, bob):
        rows = Notification.objects.for_user(user.pk).unread().unexpired().count()
        assert unread.count(user.pk) == rows == selectors.notification_unread_count(user_id=user.pk)


# --- Whether the token is still good ---------------------------------------------------------------


def test_a_snapshot_says_a_token_is_good_only_at_the_users_current_version(alice):
    assert connect.snapshot(alice.pk).token_good(0)
    services.credentials_revoke(user_id=alice.pk)
    snap = connect.snapshot(alice.pk)
    assert (snap.token_good(0), snap.token_good(1), snap.token_version) == (False, True, 1)


def test_a_snapshot_says_no_token_is_good_for_an_inactive_or_deleted_user(alice, bob):
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
    bob_pk = bob.pk
    bob.delete()
    assert not connect.snapshot(alice.pk).token_good(0)
    assert not connect.snapshot(bob_pk, page=connect.PENDING, limit=10).token_good(0)


def test_an_inactive_users_token_stays_good_when_simplejwt_does_not_check_activity(alice, settings):
    settings.SIMPLE_JWT = {**getattr(settings, "SIMPLE_JWT", {}), "CHECK_USER_IS_ACTIVE": False}
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
    assert connect.snapshot(alice.pk).token_good(0)
    assert connect.token_user(alice.pk) is not None


def test_the_token_user_is_the_whole_user_with_its_token_version(alice, bob):
    services.credentials_revoke(user_id=alice.pk)
    services.credentials_revoke(user_id=alice.pk)
    for user, version in ((alice, 2), (bob, 0)):
        loaded = connect.token_user(user.pk)
        expected = get_user_model().objects.get(pk=user.pk)
        assert [getattr(loaded, f.attname) for f in expected._meta.concrete_fields] == [
            getattr(expected, f.attname) for f in expected._meta.concrete_fields
        ]
        assert loaded.get_deferred_fields() == set() and loaded.inbox_token_version == version
        assert directory.token_user(user.pk, version, fresh=True) == loaded


def test_no_token_user_is_found_for_an_inactive_user_or_an_unknown_id(alice):
    get_user_model().objects.filter(pk=alice.pk).update(is_active=False)
    assert connect.token_user(alice.pk) is None
    assert connect.token_user(alice.pk + 1000) is None


# --- The first page ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 500])
def test_the_first_page_of_a_pending_catch_up_is_the_selectors_page(inbox, alice, limit):
    snap = connect.snapshot(alice.pk, page=connect.PENDING, limit=limit)
    assert snap.payloads == catchup_payloads(alice, after=None, limit=limit, pending=True)
    assert [p["title"] for p in snap.payloads] == ["expires later", "pending"][:limit]


@pytest.mark.parametrize(("after", "limit"), [(0, 500), (0, 2), ("first", 500), ("last", 500)])
def test_the_first_page_of_a_catch_up_after_an_id_is_the_selectors_page(inbox, alice, after, limit):
    after = {"first": inbox[0].id, "last": inbox[-1].id}.get(after, after)
    snap = connect.snapshot(alice.pk, page=connect.AFTER, after=after, limit=limit)
    assert snap.payloads == catchup_payloads(alice, after=after, limit=limit)


def test_a_page_names_each_sender_by_its_username(inbox, alice, service_account):
    senders = {p["title"]: p["sender"] for p in connect.snapshot(alice.pk, page=connect.AFTER, after=0, limit=10).payloads}
    assert senders == {"acked": "billing-service", "read": None, "expires later": None, "plain": "billing-service", "pending": "billing-service"}


@pytest.mark.parametrize("since", ["zero", "first", "before_the_deletion", "top"])
@pytest.mark.parametrize("limit", [1, 3, 500])
def test_the_first_page_of_a_replay_is_the_journals(inbox, alice, since, limit, django_assert_num_queries):
    deleted_at = Tombstone.objects.get(notification_id=inbox[3].id).seq
    since = {"zero": 0, "first": inbox[0].id, "before_the_deletion": deleted_at - 1, "top": journal.position(alice.pk).top}[since]
    snap = connect.snapshot(alice.pk, page=connect.JOURNAL, since=since, limit=limit)
    with django_assert_num_queries(0):  # each row comes with its sender: rendered on the event loop, it may not query
        page = as_compared(snap.changes)
    assert page == as_compared(journal.changes(alice.pk, since=since, limit=limit))


def test_a_replay_page_interleaves_rows_and_tombstones_in_journal_order(inbox, alice):
    changes = connect.snapshot(alice.pk, page=connect.JOURNAL, since=0, limit=500).changes
    # The expired row is left out; a read takes a new step, an ack does not.
    assert [c.reason or c.notification.title for c in changes] == ["acked", "expires later", "read", "deleted", "plain", "pending"]
    assert changes[3].id == inbox[3].id and changes[3].notification is None


def test_a_replay_page_with_many_tombstones_is_cut_at_its_limit(alice):
    kept = make_notification(alice, title="kept")
    gone = [make_notification(alice, title=f"gone {i}").id for i in range(4)]
    services.notification_delete(user=alice, ids=gone)
    Notification.objects.filter(pk=kept.pk).update(seq=journal.position(alice.pk).top + 1)
    for limit in (1, 4, 5, 6):
        snap = connect.snapshot(alice.pk, page=connect.JOURNAL, since=0, limit=limit)
        assert as_compared(snap.changes) == as_compared(journal.changes(alice.pk, since=0, limit=limit))


# --- Round trips ------------------------------------------------------------------------------------


def test_a_snapshot_is_one_statement_and_a_second_only_for_tombstones_after_since(inbox, alice, django_assert_num_queries):
    for page in (connect.NONE, connect.PENDING, connect.AFTER):
        with django_assert_num_queries(1):
            connect.snapshot(alice.pk, page=page, after=0, limit=500)
    top = journal.position(alice.pk).top
    with django_assert_num_queries(1):
        connect.snapshot(alice.pk, page=connect.JOURNAL, since=top, limit=500)
    with django_assert_num_queries(2):
        connect.snapshot(alice.pk, page=connect.JOURNAL, since=0, limit=500)
    with django_assert_num_queries(1):
        connect.token_user(alice.pk)
