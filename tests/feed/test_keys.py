"""
Keys (issue 21, docs/feed.md "Keys, groups, states and actions"): a send with a key updates the
recipient's notification of that key in place, and the sender retracts it by its key; both reach
every open tab and fix the badge.
"""

from __future__ import annotations

import threading

import pytest
from channels.db import database_sync_to_async
from django.db import connection, connections
from rest_framework.test import APIClient

from inbox import notify, services
from inbox.models import ExternalRecipient, Notification, ServiceKey, Tombstone
from inbox.services.notify import NotificationInvalid
from inbox.services.sending import notification_send
from tests.inbox.conftest import pushed  # noqa: F401 (a fixture)
from tests.realtime.conftest import close_worker_thread_connections, fresh_channel_layers, socket_factory  # noqa: F401 (fixtures)

SEND = "/api/notifications/"


def send(client, **body):
    return client.post(SEND, {"recipient": "alice", "title": "Build #42 failed", **body}, format="json")


def key_client(service, *scopes) -> APIClient:
    _, raw = ServiceKey.objects.create_key(name="ci", service=service, scopes=list(scopes or ["send"]))
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


# --- Update in place ----------------------------------------------------------------------------------


def test_a_second_send_with_the_same_key_updates_the_notification_in_place_and_makes_it_unread_again(
    db, alice, sender_api, alice_api, pushed, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = send(sender_api, key="build-42", data={"n": 1})
    assert first.status_code == 201
    nid = first.json()["id"]
    assert first.json()["key"] == "build-42"
    alice_api.post(f"/api/notifications/{nid}/read/")
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        second = send(sender_api, key="build-42", title="Build #42 fixed", data={"n": 2})
    assert second.status_code == 200, second.content  # updated, not created
    body = second.json()
    assert (body["id"], body["title"], body["data"], body["read_at"]) == (nid, "Build #42 fixed", {"n": 2}, None)
    assert Notification.objects.filter(recipient=alice).count() == 1
    # One frame: the update, with the badge counting it again; no notification.created.
    assert [(uid, f["type"], f["notification"]["id"], f["notification"]["title"], f["unread"]) for uid, f in pushed] == [
        (alice.pk, "notification.updated", nid, "Build #42 fixed", 1)
    ]
    assert pushed[0][1]["seq"] > nid  # a step of alice's journal after the row's creation


def test_an_update_that_says_mark_unread_false_leaves_the_read_state_as_it_was(db, alice, sender_api, alice_api):
    nid = send(sender_api, key="deploy-7").json()["id"]
    alice_api.post(f"/api/notifications/{nid}/read/")
    body = send(sender_api, key="deploy-7", title="Deploy 7: 50%", mark_unread=False).json()
    assert body["title"] == "Deploy 7: 50%" and body["read_at"] is not None
    assert alice_api.get("/api/notifications/unread-count/").json() == {"unread": 0}


def test_keys_are_per_recipient(db, alice, bob, sender_api):
    a = send(sender_api, key="k").json()["id"]
    b = send(sender_api, recipient="bob", key="k").json()["id"]
    assert a != b
    assert Notification.objects.filter(key="k").count() == 2


def test_a_bulk_send_with_a_key_says_which_rows_were_created_and_which_updated(
    db, alice, bob, make_user, sender_api, pushed, django_capture_on_commit_callbacks
):
    carol = make_user("carol")
    existing = send(sender_api, key="weekly").json()["id"]
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        r = sender_api.post(SEND, {"recipients": ["alice", "bob", "carol"], "title": "Weekly digest", "key": "weekly"}, format="json")
    assert r.status_code == 201
    body = r.json()
    assert body["count"] == 3 and body["ids"][0] == existing
    assert body["updated"] == [existing]
    assert sorted(body["created"]) == sorted(body["ids"][1:])
    kinds = sorted((uid, f["type"]) for uid, f in pushed)
    assert kinds == sorted([(alice.pk, "notification.updated"), (bob.pk, "notification.created"), (carol.pk, "notification.created")])


def test_the_python_api_updates_by_key_too(db, alice, django_capture_on_commit_callbacks):
    first = notify(recipient=alice, title="Order 5: packed", key="order-5")
    second = notify(recipient=alice, title="Order 5: shipped", key="order-5")
    assert first.pk == second.pk and second.title == "Order 5: shipped"
    result = notification_send(recipients=[alice], title="Order 5: delivered", key="order-5")
    assert (result.created, result.updated) == ([], [first.pk])


@pytest.mark.parametrize(
    "field, value",
    [
        ("key", ""), ("key", "has space"), ("key", "x" * 256), ("key", "ключ"), ("key", None), ("key", "a/b"),
        ("key", "nul\x00"),
        ("group", ""), ("group", "g" * 101), ("group", "likes post"), ("group", ["a"]),
        ("mark_unread", "maybe"),
    ],
)
def test_a_bad_key_or_group_is_a_400_and_stores_nothing(db, alice, sender_api, field, value):
    r = send(sender_api, **{field: value})
    assert r.status_code == 400, r.content
    assert field in r.json()
    assert not Notification.objects.exists()


def test_the_python_api_refuses_a_bad_key(db, alice):
    with pytest.raises(NotificationInvalid) as info:
        notify(recipient=alice, title="x", key="not ok")
    assert "key" in info.value.message_dict
    assert not Notification.objects.exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="threads writing at once: PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_with_one_key_to_one_recipient_make_one_row(alice, bob):
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            start.wait()
            services.notification_create(recipients=[alice, bob], title=f"status {i}", key="status")
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = list(Notification.objects.filter(key="status").values_list("recipient_id", "seq", "id"))
    assert sorted(r[0] for r in rows) == sorted([alice.pk, bob.pk])
    # Seven updates after the creation, each a later step of the journal than the row's id.
    assert all(seq > nid for _, seq, nid in rows)


# --- Retract ----------------------------------------------------------------------------------------------


def test_retracting_by_key_deletes_the_rows_buries_them_and_fixes_the_badge_live(
    db, alice, bob, sender_api, pushed, django_capture_on_commit_callbacks
):
    sender_api.post(SEND, {"recipients": ["alice", "bob"], "title": "Sale ends soon", "key": "sale-9"}, format="json")
    send(sender_api, title="Kept")
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        r = sender_api.delete("/api/notifications/by-key/sale-9/")
    assert r.status_code == 200
    assert sorted(int(u) for u in r.json()["retracted"]) == sorted([alice.pk, bob.pk])
    assert not Notification.objects.filter(key="sale-9").exists()
    assert set(Tombstone.objects.values_list("reason", flat=True)) == {"retracted"}
    frames = sorted(((uid, f["type"], f["reason"], f["unread"]) for uid, f in pushed))
    assert frames == sorted([(alice.pk, "notification.deleted", "retracted", 1), (bob.pk, "notification.deleted", "retracted", 0)])
    assert sender_api.delete("/api/notifications/by-key/sale-9/").status_code == 404


def test_retracting_for_one_recipient_leaves_the_others(db, alice, bob, sender_api, make_user):
    sender_api.post(SEND, {"recipients": ["alice", "bob"], "title": "x", "key": "k1"}, format="json")
    r = sender_api.delete(f"/api/notifications/by-key/k1/?recipient={bob.pk}")
    assert r.status_code == 200 and list(r.json()["retracted"]) == [str(bob.pk)]
    assert list(Notification.objects.filter(key="k1").values_list("recipient_id", flat=True)) == [alice.pk]
    ext = sender_api.post(SEND, {"recipient": {"external_id": "cust-1"}, "title": "x", "key": "k1"}, format="json")
    assert ext.status_code == 201
    r = sender_api.delete("/api/notifications/by-key/k1/?external_id=cust-1")
    assert list(r.json()["retracted"]) == [str(ExternalRecipient.objects.get(external_id="cust-1").user_id)]
    assert sender_api.delete("/api/notifications/by-key/k1/?external_id=nobody").status_code == 404


def test_a_user_sender_retracts_only_what_it_sent_and_an_api_key_retracts_any(db, alice, make_user, sender_api, client_for):
    other = make_user("other-sender", can_send=True)
    send(sender_api, key="shared")
    other_api = client_for(other, raise_exceptions=False)
    assert other_api.delete("/api/notifications/by-key/shared/").status_code == 404
    assert Notification.objects.filter(key="shared").exists()
    service = make_user("ci-service")
    assert key_client(service).delete("/api/notifications/by-key/shared/").status_code == 200
    assert not Notification.objects.filter(key="shared").exists()


def test_retracting_needs_the_send_permission(db, alice, sender_api, client_for, make_user, anon_client):
    send(sender_api, key="k")
    assert client_for(alice, raise_exceptions=False).delete("/api/notifications/by-key/k/").status_code == 403
    assert anon_client.delete("/api/notifications/by-key/k/").status_code == 401
    assert key_client(make_user("mint-only"), "mint").delete("/api/notifications/by-key/k/").status_code == 403
    assert Notification.objects.filter(key="k").exists()


@pytest.mark.parametrize("path", ["by-key/has%20space/", "by-key/" + "x" * 256 + "/", "by-key/k/?recipient=abc", "by-key/k/?recipient=1&external_id=e"])
def test_a_bad_retraction_is_a_400(db, alice, sender_api, path):
    send(sender_api, key="k")
    assert sender_api.delete(f"/api/notifications/{path}").status_code == 400


# --- Two tabs over the real Redis layer ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_an_update_and_a_retraction_reach_two_tabs_and_fix_their_badge(alice, redis_channel_layer, socket_factory):
    tabs = [await socket_factory(alice) for _ in range(2)]
    for tab in tabs:
        assert tab.connected
        await tab.until_sync_done()

    send_ = database_sync_to_async(notification_send)
    created = await send_(recipients=[alice], title="Build #42 failed", key="build-42")
    nid = created.notifications[0].id
    for tab in tabs:
        f = await tab.frame()
        assert (f["type"], f["notification"]["id"], f["notification"]["key"], f["unread"]) == ("notification.created", nid, "build-42", 1)

    await database_sync_to_async(services.notification_mark_read)(user=alice, ids=[nid])
    for tab in tabs:
        assert (await tab.frame())["unread"] == 0

    updated = await send_(recipients=[alice], title="Build #42 fixed", key="build-42")
    assert updated.updated == [nid]
    for tab in tabs:
        f = await tab.frame()
        assert (f["type"], f["notification"]["id"], f["notification"]["title"], f["unread"]) == ("notification.updated", nid, "Build #42 fixed", 1)

    from inbox.services.keys import notification_retract

    await database_sync_to_async(notification_retract)(key="build-42")
    for tab in tabs:
        f = await tab.frame()
        assert (f["type"], f["ids"], f["reason"], f["unread"]) == ("notification.deleted", [nid], "retracted", 0)
        assert await tab.silent()


def test_the_admin_form_refuses_a_bad_key_group_or_actions_instead_of_storing_them(db, alice, staff_user, client):
    client.force_login(staff_user)
    form = {"recipient": str(alice.pk), "sender": "", "title": "x", "category": "ops", "message": "", "data": "{}", "link": ""}
    form.update({f"{name}_{part}": "" for name in ("read_at", "expires_at") for part in (0, 1)})
    for field, value in (("key", "has space"), ("group", "a/b"), ("actions", '[{"label": "x"}]')):
        r = client.post("/admin/inbox/notification/add/", {**form, "actions": "[]", field: value})
        assert r.status_code == 200 and field in r.context["adminform"].form.errors, field
    assert not Notification.objects.exists()
    r = client.post("/admin/inbox/notification/add/", {**form, "key": "ok-1", "group": "g", "actions": '[{"label": "Go", "url": "/go"}]'})
    assert r.status_code == 302
    assert Notification.objects.values_list("key", "group", "actions").get() == ("ok-1", "g", [{"label": "Go", "url": "/go"}])


def test_a_rolled_back_keyed_send_or_retraction_pushes_nothing_and_changes_nothing(db, alice, pushed, django_capture_on_commit_callbacks):
    from django.db import transaction

    from inbox.services.keys import notification_retract

    (n,) = notification_send(recipients=[alice], title="v1", key="k").notifications
    pushed.clear()
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            notification_send(recipients=[alice], title="v2", key="k")
            notification_retract(key="k")
            raise RuntimeError("the caller's transaction fails")
    assert pushed == []
    assert Notification.objects.get(key="k").title == "v1"
    assert not Tombstone.objects.exists()
