"""
Resuming a WebSocket by journal step (issue 21): ``?since=<seq>`` and ``{"type": "sync", "since": N}``
replay every change after N in order, each once, then ``sync.done`` with ``seq``; below the
journal's floor ``sync.reset``; a bad ``since`` an error frame (and 4400 on connect). Two tabs of
one user on the real Redis channel layer.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.db import transaction

from inbox import services
from inbox.models import JournalFloor, Notification
from inbox.payloads import notification_payload
from inbox.store import journal
from realtime import protocol
from tests.factories import make_notifications
from tests.realtime.conftest import close_worker_thread_connections, fresh_channel_layers, socket_factory  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


@pytest.fixture
def ws(redis_channel_layer, socket_factory):  # noqa: F811
    return socket_factory


@database_sync_to_async
def database_view(user) -> dict[int, dict]:
    """What the user's list holds now, by id: every visible notification as the API shows it."""
    rows = Notification.objects.for_user(user.pk).unexpired().select_related("sender").order_by("id")
    return {n.id: notification_payload(n) for n in rows}


@database_sync_to_async
def position(user) -> journal.Position:
    return journal.position(user.pk)


def apply(view: dict[int, dict], frames: list[dict]) -> dict[int, dict]:
    """A client's list after these frames: created and updated put the row in, deleted takes it out."""
    view = dict(view)
    for f in frames:
        if f["type"] in (protocol.NOTIFICATION_CREATED, protocol.NOTIFICATION_UPDATED):
            view[f["notification"]["id"]] = f["notification"]
        elif f["type"] == protocol.NOTIFICATION_DELETED:
            for i in f["ids"]:
                view.pop(i, None)
    return dict(sorted(view.items()))


def changed_ids(frames: list[dict]) -> list[int]:
    return [i for f in frames for i in (f["ids"] if "ids" in f else [f["notification"]["id"]])]


@database_sync_to_async
def away_changes(alice, bob, rows) -> None:
    """What tab A (and an operator) do while tab B is away: reads, deletes, an edit, new rows."""
    services.notification_mark_read(user=alice, ids=[rows[0].id, rows[1].id])
    services.notification_mark_unread(user=alice, ids=[rows[0].id])
    services.notification_delete(user=alice, ids=[rows[2].id])
    with transaction.atomic():
        edited = Notification.objects.get(pk=rows[3].id)
        edited.title = "Edited by an operator"
        edited.save()
        services.notification_push_updated(notification=edited)
    new = services.notification_create(recipients=[alice, bob], title="while you were away")
    services.notification_create(recipients=[alice], title="and another")
    services.notification_admin_delete(notifications=[new[0]])
    services.notification_mark_read(user=alice, ids=[rows[4].id])
    services.notification_mark_all_read(user=alice)


async def test_a_tab_that_was_away_resumes_since_its_seq_and_its_list_then_equals_the_database(ws, alice, bob):
    rows = await database_sync_to_async(make_notifications)(alice, 6)
    tab_a, tab_b = await ws(alice), await ws(alice)
    _, done_a = await tab_a.until_sync_done()
    _, done_b = await tab_b.until_sync_done()
    assert done_b["seq"] == (await position(alice)).top
    old_list = await database_view(alice)  # what tab B shows when it goes away
    await tab_b.disconnect()

    await away_changes(alice, bob, rows)
    await tab_a.send_json_to({"type": "read", "ids": [rows[5].id]})  # a read through tab A's socket
    await tab_a.send_json_to({"type": "sync", "after": 0})  # sync.done after the read was handled
    await tab_a.until_sync_done()

    tab_b = await ws(alice, query=f"since={done_b['seq']}")
    frames, done = await tab_b.until_sync_done()
    now = await database_view(alice)
    assert apply(old_list, frames) == now
    assert all(f["replay"] is True for f in frames)
    ids = changed_ids(frames)
    assert len(ids) == len(set(ids)), "a change was replayed twice"
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(seqs) and seqs[0] > done_b["seq"]
    assert done["seq"] == (await position(alice)).top and done["more"] is False
    assert done["unread"] == sum(1 for n in now.values() if n["read_at"] is None)
    # Rows the tab could not have had come as created, the others as updated; the removed row with its reason.
    kinds = {i: f["type"] for f in frames for i in (f["ids"] if "ids" in f else [f["notification"]["id"]])}
    assert kinds[rows[2].id] == "notification.deleted" and kinds[rows[3].id] == "notification.updated"
    assert sorted(i for i, k in kinds.items() if k == "notification.created") == [i for i in now if i > done_b["seq"]]

    # Resuming from where the replay ended gives nothing more; live frames carry the next numbers.
    await tab_b.send_json_to({"type": "sync", "since": done["seq"]})
    assert await tab_b.until_sync_done() == ([], {**done, "unread": done["unread"]})
    [n] = await database_sync_to_async(services.notification_create)(recipients=[alice], title="live")
    live = await tab_b.frame()
    assert live["type"] == "notification.created" and live["seq"] == n.id > done["seq"]
    assert "replay" not in live


async def test_a_sync_frame_with_since_replays_on_an_open_socket_and_live_changes_are_not_sent_twice(ws, alice):
    rows = await database_sync_to_async(make_notifications)(alice, 3)
    tab = await ws(alice)
    _, done = await tab.until_sync_done()
    await database_sync_to_async(services.notification_mark_read)(user=alice, ids=[rows[0].id])
    live = await tab.frame()
    assert live["type"] == "notification.read" and live["seq"] > done["seq"]
    await tab.send_json_to({"type": "sync", "since": done["seq"]})
    frames, again = await tab.until_sync_done()
    assert [(f["type"], f["notification"]["id"], f["seq"]) for f in frames] == [("notification.updated", rows[0].id, live["seq"])]
    assert again["seq"] == live["seq"]
    assert await tab.silent()


async def test_a_step_larger_than_catchup_max_is_sent_whole_and_the_client_syncs_for_more(ws, alice, settings):
    settings.INBOX = {**settings.INBOX, "CATCHUP_MAX": 4, "CATCHUP_BATCH": 3}
    rows = await database_sync_to_async(make_notifications)(alice, 6)
    since = (await position(alice)).top
    await database_sync_to_async(services.notification_mark_all_read)(user=alice)  # one step of 6 rows
    extra = await database_sync_to_async(make_notifications)(alice, 2)
    tab = await ws(alice, query=f"since={since}")
    frames, done = await tab.until_sync_done()
    assert [f["notification"]["id"] for f in frames] == [n.id for n in rows]  # the step is never split across syncs
    assert done["more"] is True and done["seq"] == frames[-1]["seq"]
    await tab.send_json_to({"type": "sync", "since": done["seq"]})
    frames, done = await tab.until_sync_done()
    assert [(f["type"], f["notification"]["id"]) for f in frames] == [("notification.created", n.id) for n in extra]
    assert done["more"] is False


async def test_a_since_below_the_journals_floor_gets_sync_reset_and_the_socket_stays_live(ws, alice):
    await database_sync_to_async(make_notifications)(alice, 2)
    top = (await position(alice)).top
    await database_sync_to_async(JournalFloor.objects.create)(user=alice, seq=top - 1)
    tab = await ws(alice, query="since=0")
    reset = await tab.frame()
    assert reset == {"type": "sync.reset", "seq": top, "floor": top - 1, "unread": 2}
    [n] = await database_sync_to_async(services.notification_create)(recipients=[alice], title="after the reset")
    assert (await tab.frame())["notification"]["id"] == n.id
    await tab.send_json_to({"type": "sync", "since": top - 1})  # at the floor: replayable
    frames, done = await tab.until_sync_done()
    assert [f["notification"]["id"] for f in frames] == [top, n.id] and done["seq"] == n.id


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "0x10", "99999999999999999999"])
async def test_a_bad_since_on_connect_is_an_error_frame_and_close_4400(ws, alice, since):
    tab = await ws(alice, query=f"since={since}")
    assert (await tab.frame())["code"] == "invalid_since"
    assert await tab.close_code() == protocol.CLOSE_BAD_REQUEST


async def test_a_since_beyond_the_users_journal_is_refused_on_connect_and_in_a_sync_frame(ws, alice, bob):
    await database_sync_to_async(make_notifications)(bob, 3)  # numbers handed out to someone else
    tab = await ws(alice, query="since=1")
    assert (await tab.frame())["code"] == "invalid_since"
    assert await tab.close_code() == protocol.CLOSE_BAD_REQUEST
    tab = await ws(alice)
    await tab.until_sync_done()
    for since in (10**12, -1, "3", None, True):
        await tab.send_json_to({"type": "sync", "since": since})
        assert (await tab.frame())["code"] == "invalid_since"
    await tab.send_json_to({"type": "ping"})
    assert (await tab.frame())["type"] == "pong"  # still open


@database_sync_to_async
def keyed_changes(alice) -> None:
    """A sender updates one notification by its key and retracts another (inbox/services/keys.py)."""
    from inbox.services.keys import notification_retract

    services.notification_create(recipients=[alice], title="build #42 failed", key="build-42")
    services.notification_create(recipients=[alice], title="deploy started", key="deploy-7")
    return notification_retract


async def test_updates_by_key_and_retractions_while_away_are_replayed_in_place(ws, alice):
    retract = await keyed_changes(alice)
    tab = await ws(alice)
    _, done = await tab.until_sync_done()
    old_list = await database_view(alice)
    await tab.disconnect()
    await database_sync_to_async(services.notification_create)(recipients=[alice], title="build #42 fixed", key="build-42")
    await database_sync_to_async(retract)(key="deploy-7")
    tab = await ws(alice, query=f"since={done['seq']}")
    frames, again = await tab.until_sync_done()
    now = await database_view(alice)
    assert apply(old_list, frames) == now
    assert [n["title"] for n in now.values()] == ["build #42 fixed"]
    assert [(f["type"], f.get("reason")) for f in frames] == [("notification.updated", None), ("notification.deleted", "retracted")]
    assert again["seq"] == (await position(alice)).top
