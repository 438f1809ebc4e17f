"""
The change journal (issue 21, docs/feed.md "The change journal"): every change to a user's
notifications takes a number, increasing per user in commit order, written in the change's own
transaction; ``GET /api/changes/?since=N`` replays every change after N.
"""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connections, transaction
from rest_framework.test import APIClient

from inbox import services
from inbox.models import JournalFloor, Notification, Tombstone
from inbox.store import journal
from tests.factories import make_notification, make_notifications
from tests.inbox.conftest import pushed  # noqa: F401 (a fixture)

CHANGES = "/api/changes/"


def seqs(user) -> dict[int, int]:
    return dict(Notification.objects.filter(recipient=user).order_by("id").values_list("id", "seq"))


def top(user) -> int:
    return journal.position(user.pk).top


@pytest.fixture
def admin_client_(client, staff_user):
    client.force_login(staff_user)
    return client


def admin_form(recipient, **fields) -> dict:
    form = {"recipient": str(recipient.pk), "sender": "", "message": "", "data": "{}", "initial-data": "{}", "link": ""}
    form.update({f"{name}_{part}": "" for name in ("read_at", "expires_at") for part in (0, 1)})
    return {**form, **fields}


# --- Numbers ------------------------------------------------------------------------------------------


def test_rows_inserted_by_every_path_carry_their_id_as_their_journal_number(
    db, alice, bob, service_account, client_for, admin_client_, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.notification_create(recipients=[alice], title="service, one")
        services.notification_create(recipients=[alice, bob] * 500, title="service, bulk 1,000")
        assert client_for(service_account).post("/api/notifications/", {"recipient": "alice", "title": "REST"}, format="json").status_code == 201
        call_command("notify", "alice,bob", "from the shell", stdout=StringIO(), stderr=StringIO())
        assert admin_client_.post("/admin/inbox/notification/add/", admin_form(alice, category="ops", title="admin")).status_code == 302
        make_notifications(alice, 3)  # the ORM's bulk_create
        Notification.objects.create(recipient=alice, title="ORM, one")
    rows = Notification.objects.order_by("id").values_list("id", "seq", "title")
    assert len(rows) == 1 + 1000 + 1 + 2 + 1 + 3 + 1
    assert all(seq == nid > 0 for nid, seq, _ in rows)
    assert top(alice) == max(seqs(alice))


def test_each_change_takes_a_number_above_every_one_handed_out_before(db, alice, bob):
    first = make_notification(alice)
    services.notification_mark_read(user=alice, ids=[first.id])
    read_seq = seqs(alice)[first.id]
    assert read_seq > first.id
    later = make_notification(bob)
    assert later.id > read_seq  # ids and journal numbers come from one counter
    services.notification_mark_unread(user=alice, ids=[first.id])
    assert seqs(alice)[first.id] > later.id


def test_a_mark_all_read_is_one_step_of_the_journal_and_an_ack_is_none(db, alice):
    rows = make_notifications(alice, 5)
    before = top(alice)
    services.notification_ack(user=alice, ids=[rows[0].id])
    assert top(alice) == before  # a receipt is not a change a person sees
    services.notification_mark_all_read(user=alice)
    assert len(set(seqs(alice).values())) == 1
    assert top(alice) > before


def test_reads_and_deletes_announce_their_journal_number_in_their_frames(db, alice, pushed, django_capture_on_commit_callbacks):
    a, b = make_notifications(alice, 2)
    with django_capture_on_commit_callbacks(execute=True):
        services.notification_mark_read(user=alice, ids=[a.id])
        services.notification_delete(user=alice, ids=[b.id])
    [(_, read), (_, deleted)] = pushed
    assert read == {"type": "notification.read", "ids": [a.id], "read": True, "unread": 1, "seq": seqs(alice)[a.id]}
    stone = Tombstone.objects.get(notification_id=b.id)
    assert deleted == {"type": "notification.deleted", "ids": [b.id], "unread": 0, "seq": stone.seq, "reason": "deleted"}
    assert stone.seq > read["seq"]


def test_a_user_delete_and_an_admin_delete_leave_tombstones_with_the_users_next_number(db, alice, bob):
    a, b = make_notifications(alice, 2)
    [c] = make_notifications(bob, 1)
    services.notification_delete(user=alice, ids=[a.id, 99_999])
    services.notification_admin_delete(notifications=[b, c])
    stones = list(Tombstone.objects.order_by("seq").values_list("user_id", "notification_id", "reason"))
    assert stones == [(alice.pk, a.id, "deleted"), (alice.pk, b.id, "deleted"), (bob.pk, c.id, "deleted")]
    assert top(alice) == Tombstone.objects.get(notification_id=b.id).seq


def test_an_admin_edit_stamps_the_row_and_its_frame_carries_the_number(db, admin_client_, alice, pushed, django_capture_on_commit_callbacks):
    n = make_notification(alice, title="Before")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(f"/admin/inbox/notification/{n.id}/change/", admin_form(alice, category="general", title="After"))
    assert response.status_code == 302
    n.refresh_from_db()
    assert n.seq > n.id
    [(_, frame)] = pushed
    assert frame["type"] == "notification.updated" and frame["seq"] == n.seq


@pytest.mark.django_db(transaction=True)
def test_under_concurrent_sends_reads_and_deletes_no_change_commits_below_a_number_already_seen(alice, bob):
    """
    A poller that has seen every change up to N must never later find a change numbered N or
    below: what "resume after N" relies on. Group commit (PostgreSQL), bulk sends, reads, deletes
    and an observer all run at once.
    """
    stop = threading.Event()
    errors: list[str] = []

    def sender(i: int) -> None:
        try:
            for k in range(25):
                services.notification_create(recipients=[alice] if k % 3 else [alice, bob] * 20, title=f"{i}-{k}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))
        finally:
            connections.close_all()

    def reader() -> None:
        try:
            while not stop.is_set():
                ids = list(Notification.objects.filter(recipient=alice).order_by("-id").values_list("id", flat=True)[:3])
                if ids:
                    services.notification_mark_read(user=alice, ids=ids[:2])
                    services.notification_delete(user=alice, ids=ids[2:])
        except Exception as exc:  # pragma: no cover
            errors.append(repr(exc))
        finally:
            connections.close_all()

    def observer() -> None:
        seen: set[tuple[str, int, int]] = set()
        high = 0
        try:
            while not stop.is_set():
                with transaction.atomic():
                    changes = {("row", i, s) for i, s in Notification.objects.filter(recipient=alice).values_list("id", "seq")}
                    changes |= {("gone", i, s) for i, s in Tombstone.objects.filter(user=alice).values_list("notification_id", "seq")}
                late = [c for c in changes - seen if c[2] <= high]
                if late:
                    errors.append(f"committed at or below {high} after it was seen: {sorted(late)[:5]}")
                seen |= changes
                high = max([high] + [c[2] for c in changes])
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(3)]
    side = [threading.Thread(target=reader), threading.Thread(target=observer)]
    for t in side + threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    for t in side:
        t.join(30)
    assert errors == []
    assert Notification.objects.filter(recipient=bob).count() == 3 * 9 * 20
    assert not Notification.objects.filter(seq__lt=1).exists()


# --- The REST replay --------------------------------------------------------------------------------


def test_changes_since_a_number_are_every_later_change_once_in_journal_order(db, alice, bob, client_for):
    a, b, c = make_notifications(alice, 3)
    make_notifications(bob, 1)
    since = top(alice)
    services.notification_mark_read(user=alice, ids=[a.id])
    services.notification_delete(user=alice, ids=[b.id])
    services.notification_mark_read(user=alice, ids=[c.id])
    services.notification_mark_unread(user=alice, ids=[a.id])
    [d] = make_notifications(alice, 1)
    body = client_for(alice).get(CHANGES, {"since": since}).json()
    assert [(ch["type"], ch.get("id") or ch["notification"]["id"]) for ch in body["changes"]] == [
        ("notification.deleted", b.id), ("notification.updated", c.id), ("notification.updated", a.id), ("notification.created", d.id),
    ]
    assert body["changes"][0]["reason"] == "deleted"
    assert body["changes"][2]["notification"]["read_at"] is None  # a's state now, not at its first change
    assert [ch["seq"] for ch in body["changes"]] == sorted(ch["seq"] for ch in body["changes"])
    assert body["seq"] == top(alice) and body["next"] is None and body["unread"] == 2
    again = client_for(alice).get(CHANGES, {"since": body["seq"]}).json()
    assert again["changes"] == [] and again["seq"] == body["seq"]


def test_a_step_larger_than_a_page_is_paged_with_next_and_nothing_is_sent_twice(db, alice, client_for):
    rows = make_notifications(alice, 250)
    since = top(alice)
    services.notification_mark_all_read(user=alice)
    url, got = f"{CHANGES}?since={since}&page_size=100", []
    while url:
        body = client_for(alice).get(url).json()
        got += [ch["notification"]["id"] for ch in body["changes"]]
        assert all(ch["type"] == "notification.updated" for ch in body["changes"])
        url = body["next"]
    assert got == [n.id for n in rows]
    assert body["seq"] == top(alice)


@pytest.mark.parametrize("query", ["", "since=", "since=abc", "since=-1", "since=1.5", "since=99999999999999999999", "since=0&page_size=0", "since=0&after_id=x"])
def test_a_bad_since_is_a_400(db, alice, client_for, query):
    response = client_for(alice).get(f"{CHANGES}?{query}")
    assert response.status_code == 400, response.content


def test_a_since_beyond_the_users_journal_is_a_400_and_below_its_floor_a_410_reset(db, alice, client_for):
    make_notifications(alice, 2)
    response = client_for(alice).get(CHANGES, {"since": top(alice) + 1})
    assert response.status_code == 400 and "since" in response.json()
    JournalFloor.objects.create(user=alice, seq=top(alice))
    gone = client_for(alice).get(CHANGES, {"since": 0})
    assert gone.status_code == 410
    assert gone.json()["code"] == "sync_reset" and gone.json()["seq"] == top(alice)
    assert client_for(alice).get(CHANGES, {"since": top(alice)}).status_code == 200


def test_changes_need_a_signed_in_user_and_show_only_their_own(db, alice, bob, client_for):
    make_notifications(bob, 2)
    assert APIClient().get(CHANGES, {"since": 0}).status_code == 401
    assert client_for(alice).get(CHANGES, {"since": 0}).json()["changes"] == []

