"""
States and actions (issue 21, docs/feed.md "Keys, groups, states and actions"): seen apart from
read, archive and unarchive (by ids or by filter), up to two actions whose click is recorded, each
pushed live and counted in the badge.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from inbox import services
from inbox.models import Notification
from inbox.services import feed_state
from tests.factories import make_notifications
from tests.inbox.conftest import pushed  # noqa: F401 (a fixture)
from tests.realtime.conftest import close_worker_thread_connections, fresh_channel_layers, socket_factory  # noqa: F401 (fixtures)

SEND = "/api/notifications/"
COUNT = "/api/notifications/unread-count/"


# --- Seen -------------------------------------------------------------------------------------------------


def test_seen_is_apart_from_read_and_the_badge_counts_either(db, alice, alice_api, pushed, django_capture_on_commit_callbacks):
    a, b, c = make_notifications(alice, 3)
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        r = alice_api.post("/api/notifications/seen/", {"ids": [a.pk, b.pk]}, format="json")
    assert r.status_code == 200 and r.json() == {"updated": [a.pk, b.pk], "unread": 3, "unseen": 1}
    assert alice_api.get(COUNT).json() == {"unread": 3}
    assert alice_api.get(COUNT + "?count=unseen").json() == {"unread": 3, "unseen": 1, "count": 1}
    assert [(f["type"], f["ids"], f["unseen"], f["unread"]) for _, f in pushed] == [("notification.seen", [a.pk, b.pk], 1, 3)]
    assert pushed[0][1]["seq"] > c.pk
    # Again: nothing changes, nothing is pushed.
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.post("/api/notifications/seen/", {"ids": [a.pk]}, format="json").json()["updated"] == []
    assert pushed == []
    assert alice_api.post("/api/notifications/seen/", {"all": True}, format="json").json()["updated"] == [c.pk]
    assert alice_api.get(SEND + f"{a.pk}/").json()["seen_at"] is not None


@pytest.mark.parametrize(
    "body",
    [{}, {"ids": []}, {"ids": ["x"]}, {"ids": [0]}, {"ids": [True]}, {"ids": [1], "all": True}, {"all": False}, {"all": True, "bogus": 1},
     {"all": True, "category": "not a slug"}, {"ids": list(range(1, 2000))}, [1, 2]],
)
def test_a_bad_seen_or_archive_request_is_a_400(db, alice, alice_api, body):
    for path in ("seen", "archive", "unarchive"):
        assert alice_api.post(f"/api/notifications/{path}/", body, format="json").status_code == 400


def test_the_unread_count_refuses_an_unknown_count(db, alice, alice_api):
    assert alice_api.get(COUNT + "?count=everything").status_code == 400


def test_another_users_ids_change_nothing(db, alice, bob, client_for):
    (n,) = make_notifications(alice, 1)
    bob_api = client_for(bob)
    for path in ("seen", "archive"):
        assert bob_api.post(f"/api/notifications/{path}/", {"ids": [n.pk]}, format="json").json()["updated"] == []
    n.refresh_from_db()
    assert (n.seen_at, n.archived_at) == (None, None)


# --- Archive ----------------------------------------------------------------------------------------------


def test_archiving_takes_notifications_out_of_the_list_reads_and_sees_them_and_unarchiving_brings_them_back(
    db, alice, alice_api, pushed, django_capture_on_commit_callbacks
):
    a, b = make_notifications(alice, 2)
    with django_capture_on_commit_callbacks(execute=True):
        r = alice_api.post("/api/notifications/archive/", {"ids": [a.pk]}, format="json")
    assert r.json() == {"updated": [a.pk], "unread": 1, "unseen": 1}
    assert [n["id"] for n in alice_api.get(SEND).json()["results"]] == [b.pk]
    archived = alice_api.get(SEND + "?archived=true").json()["results"]
    assert [n["id"] for n in archived] == [a.pk] and archived[0]["read_at"] and archived[0]["seen_at"]
    assert [(f["type"], f["ids"], f["unread"], f["unseen"]) for _, f in pushed] == [("notification.archived", [a.pk], 1, 1)]
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.post("/api/notifications/unarchive/", {"ids": [a.pk]}, format="json").json()["updated"] == [a.pk]
    assert [n["id"] for n in alice_api.get(SEND).json()["results"]] == [b.pk, a.pk]
    assert [(f["type"], f["ids"], f["unread"]) for _, f in pushed] == [("notification.unarchived", [a.pk], 1)]


def test_archiving_by_filter_takes_only_what_matches(db, alice, alice_api):
    read_ops, unread_ops = make_notifications(alice, 2, category="ops")
    (billing,) = make_notifications(alice, 1, category="billing")
    services.notification_mark_read(user=alice, ids=[read_ops.pk])
    r = alice_api.post("/api/notifications/archive/", {"all": True, "category": "ops", "read": True}, format="json")
    assert r.json()["updated"] == [read_ops.pk]
    r = alice_api.post("/api/notifications/archive/", {"all": True, "category": "ops"}, format="json")
    assert r.json()["updated"] == [unread_ops.pk]
    assert list(Notification.objects.filter(archived_at__isnull=True).values_list("id", flat=True)) == [billing.pk]
    assert alice_api.post("/api/notifications/unarchive/", {"all": True}, format="json").json()["updated"] == [read_ops.pk, unread_ops.pk]


# --- Actions ----------------------------------------------------------------------------------------------


def test_a_send_with_two_actions_shows_them_and_a_click_is_recorded_read_and_pushed(
    db, alice, sender_api, alice_api, pushed, django_capture_on_commit_callbacks
):
    actions = [{"label": "Approve", "callback": "approve-expense"}, {"label": "Open", "url": "/expenses/9"}]
    r = sender_api.post(SEND, {"recipient": "alice", "title": "Expense #9", "actions": actions}, format="json")
    assert r.status_code == 201 and r.json()["actions"] == actions
    nid = r.json()["id"]
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        click = alice_api.post(f"/api/notifications/{nid}/interact/", {"action": 1}, format="json")
    assert click.status_code == 200
    assert click.json()["interacted_at"] is not None and click.json()["state"] == "read"
    assert [(f["type"], f["id"], f["action"], f["read"], f["unread"]) for _, f in pushed] == [("notification.interacted", nid, 1, True, 0)]


@pytest.mark.parametrize("body, status", [({"action": 2}, 400), ({"action": "0"}, 400), ({"action": True}, 400), ({}, 400)])
def test_a_bad_click_is_a_400(db, alice, sender_api, alice_api, body, status):
    nid = sender_api.post(SEND, {"recipient": "alice", "title": "x", "actions": [{"label": "Go", "url": "/go"}]}, format="json").json()["id"]
    assert alice_api.post(f"/api/notifications/{nid}/interact/", body, format="json").status_code == status


def test_clicking_an_action_a_notification_lacks_is_a_400_and_someone_elses_a_404(db, alice, bob, sender_api, alice_api, client_for):
    nid = sender_api.post(SEND, {"recipient": "alice", "title": "x", "actions": [{"label": "Go", "url": "/go"}]}, format="json").json()["id"]
    assert alice_api.post(f"/api/notifications/{nid}/interact/", {"action": 1}, format="json").status_code == 400
    assert client_for(bob).post(f"/api/notifications/{nid}/interact/", {"action": 0}, format="json").status_code == 404
    assert Notification.objects.get(pk=nid).interacted_at is None


@pytest.mark.parametrize(
    "actions",
    [
        "click", {"label": "x"}, [{"label": "a", "url": "/a"}] * 3, [{"label": "", "url": "/a"}], [{"label": "x" * 41, "url": "/a"}],
        [{"label": "a"}], [{"label": "a", "url": "/a", "callback": "b"}], [{"label": "a", "url": "javascript:alert(1)"}],
        [{"label": "a", "callback": "has space"}], [{"label": "a", "url": "/a", "extra": 1}], [1], None,
    ],
)
def test_bad_actions_are_a_400_and_store_nothing(db, alice, sender_api, actions):
    r = sender_api.post(SEND, {"recipient": "alice", "title": "x", "actions": actions}, format="json")
    assert r.status_code == 400 and "actions" in r.json(), r.content
    assert not Notification.objects.exists()


def test_the_service_refuses_a_click_on_a_missing_action(db, alice):
    (n,) = make_notifications(alice, 1)
    with pytest.raises(feed_state.NoSuchAction):
        feed_state.notification_interact(user=alice, notification_id=n.pk, action=0)


# --- Live, over the real Redis layer --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_seen_and_archive_reach_every_tab(alice, redis_channel_layer, socket_factory):
    (n,) = await database_sync_to_async(make_notifications)(alice, 1)
    tabs = [await socket_factory(alice) for _ in range(2)]
    for tab in tabs:
        await tab.until_sync_done()
    await database_sync_to_async(feed_state.notification_mark_seen)(user=alice, ids=[n.pk])
    await database_sync_to_async(feed_state.notification_set_archived)(user=alice, ids=[n.pk], archived=True)
    for tab in tabs:
        seen, archived = await tab.frames(2)
        assert (seen["type"], seen["ids"], seen["unseen"]) == ("notification.seen", [n.pk], 0)
        assert (archived["type"], archived["ids"], archived["unread"]) == ("notification.archived", [n.pk], 0)
        assert archived["seq"] > seen["seq"]
