"""Catch-up on connect and on ``sync``: what the client missed, from the database, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from inbox import services
from inbox.models import Notification
from inbox.payloads import notification_payload
from inbox.store import journal
from realtime import protocol, publisher

pytestmark = pytest.mark.django_db(transaction=True)


async def journal_top(user) -> int:
    """The user's newest step in the change journal: sync.done's ``seq`` (inbox/store/journal.py)."""
    return (await database_sync_to_async(journal.position)(user.pk)).top


def ids_of(frames: list[dict]) -> list[int]:
    return [f["notification"]["id"] for f in frames]


async def make(n: int, user, send, **kwargs) -> list[int]:
    return [(await send(user, title=f"#{i}", **kwargs))[0].id for i in range(n)]


async def test_catch_up_after_an_id_sends_exactly_the_newer_ids_oldest_first(ws, send, alice, bob):
    ids = await make(5, alice, send)
    await make(2, bob, send)
    await database_sync_to_async(services.notification_mark_read)(user=alice, ids=[ids[3]])
    sock = await ws(alice, after=ids[1])
    frames, done = await sock.until_sync_done()
    assert ids_of(frames) == ids[2:]
    assert all(f["type"] == "notification.created" and f["catchup"] is True for f in frames)
    assert all(f["notification"]["recipient"] == alice.pk for f in frames)
    # After an id, read and delivered notifications come too: the client asked for everything newer.
    assert frames[1]["notification"]["state"] == "read"
    assert done == {"type": "sync.done", "last_id": ids[-1], "unread": 4, "more": False, "seq": await journal_top(alice)}


async def test_catch_up_frames_carry_the_rest_payload(ws, send, alice, service_account):
    [n] = await send(alice, title="Payload", sender=service_account, data={"k": [1, 2]})
    sock = await ws(alice, after=0)
    [frame], _ = await sock.until_sync_done()
    row = await database_sync_to_async(Notification.objects.select_related("sender").get)(pk=n.id)
    assert frame["notification"] == notification_payload(row)


async def test_catch_up_after_the_newest_id_sends_nothing_but_sync_done(ws, send, alice):
    ids = await make(2, alice, send)
    sock = await ws(alice, after=ids[-1])
    frames, done = await sock.until_sync_done()
    assert frames == []
    assert done == {"type": "sync.done", "last_id": ids[-1], "unread": 2, "more": False, "seq": ids[-1]}


async def test_without_after_the_pending_notifications_are_sent_then_sync_done(ws, send, alice):
    ids = await make(4, alice, send)
    await database_sync_to_async(services.notification_ack)(user=alice, ids=[ids[0], ids[3]])
    sock = await ws(alice)
    frames, done = await sock.until_sync_done()
    assert ids_of(frames) == [ids[1], ids[2]]
    assert all(f["catchup"] is True for f in frames)
    # Everything up to the newest id is accounted for: the client resumes from there.
    assert done == {"type": "sync.done", "last_id": ids[3], "unread": 4, "more": False, "seq": ids[3]}


async def test_expired_notifications_are_left_out_of_both_catch_up_modes(ws, send, alice):
    [live] = await send(alice, title="live")
    await send(alice, title="expired", expires_at=timezone.now() - timedelta(minutes=1))
    [later] = await send(alice, title="expires later", expires_at=timezone.now() + timedelta(hours=1))
    for kwargs in ({}, {"after": 0}):
        sock = await ws(alice, **kwargs)
        frames, done = await sock.until_sync_done()
        assert ids_of(frames) == [live.id, later.id]
        assert done["unread"] == 2


async def test_catch_up_pages_at_catchup_max_and_the_client_syncs_for_more(ws, send, alice, settings):
    settings.INBOX = {**settings.INBOX, "CATCHUP_MAX": 3, "CATCHUP_BATCH": 2}
    ids = await make(7, alice, send)
    sock = await ws(alice, after=0)
    frames, done = await sock.until_sync_done()
    assert ids_of(frames) == ids[:3]
    assert done == {"type": "sync.done", "last_id": ids[2], "unread": 7, "more": True, "seq": ids[-1]}

    await sock.send_json_to({"type": "sync", "after": done["last_id"]})
    frames, done = await sock.until_sync_done()
    assert ids_of(frames) == ids[3:6]
    assert done["more"] is True and done["last_id"] == ids[5]

    await sock.send_json_to({"type": "sync", "after": done["last_id"]})
    frames, done = await sock.until_sync_done()
    assert ids_of(frames) == ids[6:]
    assert done == {"type": "sync.done", "last_id": ids[6], "unread": 7, "more": False, "seq": ids[-1]}


async def test_exactly_catchup_max_notifications_do_not_ask_for_more(ws, send, alice, settings):
    settings.INBOX = {**settings.INBOX, "CATCHUP_MAX": 3, "CATCHUP_BATCH": 2}
    ids = await make(3, alice, send)
    sock = await ws(alice, after=0)
    frames, done = await sock.until_sync_done()
    assert ids_of(frames) == ids
    assert done["more"] is False and done["last_id"] == ids[-1]


async def test_pending_catch_up_pages_too(ws, send, alice, settings):
    settings.INBOX = {**settings.INBOX, "CATCHUP_MAX": 2, "CATCHUP_BATCH": 500}
    ids = await make(3, alice, send)
    sock = await ws(alice)
    frames, done = await sock.until_sync_done()
    assert ids_of(frames) == ids[:2]
    assert done["more"] is True and done["last_id"] == ids[1]
    await sock.send_json_to({"type": "sync", "after": done["last_id"]})
    frames, done = await sock.until_sync_done()
    assert ids_of(frames) == ids[2:]
    assert done["more"] is False


async def test_a_live_event_already_sent_by_the_catch_up_is_skipped(ws, send, alice):
    ids = await make(2, alice, send)
    sock = await ws(alice, after=0)
    frames, _ = await sock.until_sync_done()
    assert ids_of(frames) == ids
    # The live event of a notification the catch-up already sent arrives late (the race that the
    # join-first order creates): the client must not see it twice.
    row = await database_sync_to_async(Notification.objects.select_related("sender").get)(pk=ids[1])
    layer = get_channel_layer()
    await layer.group_send(publisher.group_for_user(alice.pk), protocol.created_message(notification_payload(row), 2))
    assert await sock.silent()
    [newer] = await send(alice)
    frame = await sock.frame()
    assert frame["notification"]["id"] == newer.id and "catchup" not in frame


async def test_events_of_a_process_of_the_earlier_version_still_reach_the_socket_once(ws, send, alice):
    """During a rolling restart an older process sends the frame's fields, not the frame."""
    ids = await make(2, alice, send)
    sock = await ws(alice, after=ids[0])
    frames, _ = await sock.until_sync_done()
    assert ids_of(frames) == ids[1:]
    rows = await database_sync_to_async(list)(Notification.objects.select_related("sender").filter(pk__in=ids).order_by("pk"))
    layer = get_channel_layer()
    group = publisher.group_for_user(alice.pk)
    covered = {"type": protocol.NOTIFICATION_CREATED, "notification": notification_payload(rows[1]), "unread": 2}
    await layer.group_send(group, covered)
    assert await sock.silent()  # the catch-up sent it
    resent = {"type": protocol.NOTIFICATION_CREATED, "notification": notification_payload(rows[0]), "unread": 2, "resend": True}
    await layer.group_send(group, resent)
    assert await sock.frame() == {"type": "notification.created", "notification": notification_payload(rows[0]), "unread": 2}
    await layer.group_send(group, {"type": protocol.NOTIFICATION_READ, "ids": [ids[0]], "read": True, "unread": 1})
    assert await sock.frame() == {"type": "notification.read", "ids": [ids[0]], "read": True, "unread": 1}


async def test_a_sync_frame_replays_from_any_id(connected, send, alice):
    sock = await connected(alice)
    ids = await make(3, alice, send)
    assert ids_of(await sock.frames(3)) == ids
    await sock.send_json_to({"type": "sync", "after": ids[0]})
    frames, done = await sock.until_sync_done()
    assert ids_of(frames) == ids[1:]
    assert done["last_id"] == ids[-1] and done["more"] is False


async def test_a_notification_created_after_the_catch_up_arrives_once_live(ws, send, alice):
    [old] = await send(alice)
    sock = await ws(alice)
    frames, _ = await sock.until_sync_done()
    assert ids_of(frames) == [old.id]
    [new] = await send(alice)
    frame = await sock.frame()
    assert frame["notification"]["id"] == new.id and "catchup" not in frame
    assert await sock.silent()
