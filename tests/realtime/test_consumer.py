"""The consumer: live frames, frames from the client, bad frames, limits. Each runs on the in-memory and the Redis layer."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from inbox import services
from inbox.models import Notification, Tombstone
from realtime.publisher import group_for_user

from .conftest import group_members

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def db_row(pk: int) -> Notification:
    return Notification.objects.get(pk=pk)


@database_sync_to_async
def rest_get(user, path: str) -> dict:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    response = client.get(path)
    assert response.status_code == 200, response.content
    return response.json()


async def pong(sock) -> None:
    """A ping answered means every frame sent before it was handled (frames are handled in order)."""
    await sock.send_json_to({"type": "ping"})
    assert await sock.frame() == {"type": "pong"}


# --- Live notifications --------------------------------------------------------------------------


async def test_a_new_notification_reaches_only_its_recipients_sockets(connected, send, alice, bob):
    alice_sock = await connected(alice)
    bob_sock = await connected(bob)
    [n] = await send(alice, title="Invoice paid", category="billing", data={"amount": 12})
    frame = await alice_sock.frame()
    assert frame["type"] == "notification.created"
    assert frame["unread"] == 1
    assert "catchup" not in frame
    assert frame["notification"]["id"] == n.id
    assert frame["notification"]["title"] == "Invoice paid"
    assert frame["notification"]["data"] == {"amount": 12}
    assert await bob_sock.silent()


async def test_the_pushed_notification_has_the_same_fields_as_the_rest_api(connected, send, alice, service_account):
    sock = await connected(alice)
    [n] = await send(alice, title="Same shape", sender=service_account, link="https://example.com/x")
    frame = await sock.frame()
    assert frame["notification"] == await rest_get(alice, f"/api/notifications/{n.id}/")
    assert frame["notification"]["sender"] == "billing-service"


async def test_two_tabs_of_one_user_both_receive_each_notification_once(connected, send, alice):
    tab1, tab2 = await connected(alice), await connected(alice)
    [n] = await send(alice)
    assert (await tab1.frame())["notification"]["id"] == n.id
    assert (await tab2.frame())["notification"]["id"] == n.id
    assert await tab1.silent() and await tab2.silent()


async def test_a_bulk_send_pushes_one_frame_to_each_recipient(connected, send, alice, bob, make_user):
    carol = await database_sync_to_async(make_user)("carol")
    socks = {u.pk: await connected(u) for u in (alice, bob, carol)}
    created = await send(alice, bob, carol, title="Maintenance tonight")
    for n in created:
        frame = await socks[n.recipient_id].frame()
        assert frame["notification"]["id"] == n.id
        assert frame["notification"]["recipient"] == n.recipient_id
    for sock in socks.values():
        assert await sock.silent(0.1)


async def test_a_notification_saved_one_by_one_is_pushed_after_commit(connected, alice):
    sock = await connected(alice)
    n = await database_sync_to_async(Notification.objects.create)(recipient=alice, title="From the shell")
    frame = await sock.frame()
    assert frame["notification"]["id"] == n.id
    assert frame["notification"]["title"] == "From the shell"
    assert frame["unread"] == 1


async def test_a_rolled_back_transaction_pushes_nothing(connected, alice):
    sock = await connected(alice)

    def create_then_fail():
        with transaction.atomic():
            services.notification_create(recipients=[alice], title="never committed")
            Notification.objects.create(recipient=alice, title="never committed either")
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        await database_sync_to_async(create_then_fail)()
    assert await sock.silent(0.5)
    assert await database_sync_to_async(Notification.objects.count)() == 0


async def test_an_already_expired_notification_is_not_pushed(connected, send, alice):
    sock = await connected(alice)
    await send(alice, title="too late", expires_at=timezone.now() - timedelta(seconds=1))
    assert await sock.silent()


async def test_the_unread_count_rides_along_with_each_frame(connected, send, alice):
    sock = await connected(alice)
    await send(alice)
    await send(alice)
    assert [f["unread"] for f in await sock.frames(2)] == [1, 2]


async def test_a_deleted_notification_is_announced_to_every_tab(connected, send, alice):
    tab1, tab2 = await connected(alice), await connected(alice)
    [n, _] = [*(await send(alice)), *(await send(alice))]
    await tab1.frames(2)
    await tab2.frames(2)
    await database_sync_to_async(services.notification_delete)(user=alice, ids=[n.id])
    step = (await database_sync_to_async(Tombstone.objects.get)(notification_id=n.id)).seq
    for tab in (tab1, tab2):
        assert await tab.frame() == {"type": "notification.deleted", "ids": [n.id], "unread": 1, "seq": step, "reason": "deleted"}


async def test_an_admin_resend_reaches_a_socket_whose_catch_up_already_covered_the_notification(connected, send, alice):
    [n] = await send(alice)
    await database_sync_to_async(services.notification_ack)(user=alice, ids=[n.id])
    sock = await connected(alice)  # pending catch-up: nothing to send, everything up to n.id accounted for
    await database_sync_to_async(services.notification_resend)(notifications=[await db_row(n.id)])
    frame = await sock.frame()
    assert frame["type"] == "notification.created"
    assert frame["notification"]["id"] == n.id


# --- Frames from the client --------------------------------------------------------------------


async def test_a_read_frame_marks_read_and_reaches_the_other_tab(connected, send, alice):
    tab1, tab2 = await connected(alice), await connected(alice)
    [n1] = await send(alice)
    [n2] = await send(alice)
    await tab1.frames(2)
    await tab2.frames(2)
    await tab1.send_json_to({"type": "read", "ids": [n1.id]})
    frame = await tab1.frame()
    expected = {"type": "notification.read", "ids": [n1.id], "read": True, "unread": 1, "seq": (await db_row(n1.id)).seq}
    assert frame == expected
    assert await tab2.frame() == expected
    assert (await db_row(n1.id)).read_at is not None
    assert (await db_row(n2.id)).read_at is None


async def test_read_all_marks_every_notification_of_a_category_read(connected, send, alice):
    sock = await connected(alice)
    [billing] = await send(alice, category="billing")
    [social] = await send(alice, category="social")
    await sock.frames(2)
    await sock.send_json_to({"type": "read_all", "category": "billing"})
    frame = await sock.frame()
    assert frame == {"type": "notification.read", "ids": [billing.id], "read": True, "unread": 1, "seq": (await db_row(billing.id)).seq}
    await sock.send_json_to({"type": "read_all"})
    frame = await sock.frame()
    assert frame == {"type": "notification.read", "ids": [social.id], "read": True, "unread": 0, "seq": (await db_row(social.id)).seq}


async def test_a_user_cannot_read_another_users_notification_over_the_socket(connected, send, alice, bob):
    sock = await connected(alice)
    [bobs] = await send(bob)
    await sock.send_json_to({"type": "read", "ids": [bobs.id]})
    await pong(sock)
    assert (await db_row(bobs.id)).read_at is None


async def test_an_ack_sets_delivered_at_once_and_is_idempotent(connected, send, alice):
    sock = await connected(alice)
    [n] = await send(alice)
    await sock.frame()
    await sock.send_json_to({"type": "ack", "ids": [n.id]})
    await pong(sock)
    first = (await db_row(n.id)).delivered_at
    assert first is not None
    await sock.send_json_to({"type": "ack", "ids": [n.id, n.id]})
    await pong(sock)
    row = await db_row(n.id)
    assert row.delivered_at == first
    assert row.read_at is None


async def test_a_user_cannot_ack_another_users_notification(connected, send, alice, bob):
    sock = await connected(alice)
    [bobs] = await send(bob)
    await sock.send_json_to({"type": "ack", "ids": [bobs.id]})
    await pong(sock)
    assert (await db_row(bobs.id)).delivered_at is None


async def test_ping_gets_pong(connected, alice):
    sock = await connected(alice)
    await sock.send_json_to({"type": "ping"})
    assert await sock.frame() == {"type": "pong"}


BAD_FRAMES = [
    ("not json", "invalid_json"),
    ('{"type": "ping"', "invalid_json"),
    ("[1, 2]", "invalid_frame"),
    ("42", "invalid_frame"),
    ('"ping"', "invalid_frame"),
    ('{"ids": [1]}', "invalid_frame"),
    ('{"type": null}', "invalid_frame"),
    ('{"type": "subscribe", "group": "inbox.user.1"}', "unknown_type"),
    ('{"type": "ack"}', "invalid_ids"),
    ('{"type": "ack", "ids": "1"}', "invalid_ids"),
    ('{"type": "ack", "ids": []}', "invalid_ids"),
    ('{"type": "ack", "ids": [true]}', "invalid_ids"),
    ('{"type": "ack", "ids": [-1]}', "invalid_ids"),
    ('{"type": "ack", "ids": [0]}', "invalid_ids"),
    ('{"type": "read", "ids": [1.5]}', "invalid_ids"),
    ('{"type": "read", "ids": ["1"]}', "invalid_ids"),
    ('{"type": "read", "ids": [9223372036854775808]}', "invalid_ids"),
    (json.dumps({"type": "read", "ids": list(range(1, 1002))}), "too_many_ids"),
    ('{"type": "sync"}', "invalid_after"),
    ('{"type": "sync", "after": -1}', "invalid_after"),
    ('{"type": "sync", "after": "5"}', "invalid_after"),
    ('{"type": "read_all", "category": 5}', "invalid_category"),
    ('{"type": "read_all", "category": "' + "x" * 51 + '"}', "invalid_category"),
]


async def test_each_bad_frame_gets_an_error_frame_and_the_socket_stays_usable(connected, send, alice):
    sock = await connected(alice)
    for text, code in BAD_FRAMES:
        await sock.send_to(text_data=text)
        frame = await sock.frame()
        assert (frame["type"], frame["code"]) == ("error", code), f"{text[:60]!r} -> {frame}"
        assert isinstance(frame["detail"], str) and frame["detail"]
        await pong(sock)
    [n] = await send(alice)
    assert (await sock.frame())["notification"]["id"] == n.id


async def test_a_binary_frame_gets_an_error_frame_and_the_socket_stays_usable(connected, alice):
    sock = await connected(alice)
    await sock.send_to(bytes_data=b'{"type": "ping"}')
    frame = await sock.frame()
    assert frame["type"] == "error" and frame["code"] == "binary_not_supported"
    await pong(sock)


async def test_an_oversized_frame_closes_the_socket_with_1009(connected, alice, settings):
    settings.REALTIME = {**settings.REALTIME, "MAX_FRAME_BYTES": 1024}
    sock = await connected(alice)
    await sock.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 1024}))
    assert await sock.close_code() == 1009


async def test_an_oversized_frame_of_multibyte_characters_closes_the_socket_with_1009(connected, alice, settings):
    settings.REALTIME = {**settings.REALTIME, "MAX_FRAME_BYTES": 1024}
    sock = await connected(alice)
    await sock.send_to(text_data=json.dumps({"type": "ping", "pad": "é" * 600}, ensure_ascii=False))
    assert await sock.close_code() == 1009


async def test_an_oversized_binary_frame_closes_the_socket_with_1009(connected, alice, settings):
    settings.REALTIME = {**settings.REALTIME, "MAX_FRAME_BYTES": 1024}
    sock = await connected(alice)
    await sock.send_to(bytes_data=b"x" * 2048)
    assert await sock.close_code() == 1009


async def test_too_many_frames_get_rate_limited_then_closed_with_4429(connected, alice, settings):
    settings.REALTIME = {**settings.REALTIME, "FRAME_RATE": 0.01, "FRAME_BURST": 3, "FRAME_ABUSE_CLOSE": 3}
    sock = await connected(alice)
    for _ in range(3):
        await pong(sock)
    for _ in range(2):
        await sock.send_json_to({"type": "ping"})
        frame = await sock.frame()
        assert frame["type"] == "error" and frame["code"] == "rate_limited"
    await sock.send_json_to({"type": "ping"})
    assert await sock.close_code() == 4429


async def test_binary_frames_count_against_the_rate_limit(connected, alice, settings):
    settings.REALTIME = {**settings.REALTIME, "FRAME_RATE": 0.01, "FRAME_BURST": 2, "FRAME_ABUSE_CLOSE": 2}
    sock = await connected(alice)
    for _ in range(2):
        await sock.send_to(bytes_data=b"\x00")
        assert (await sock.frame())["code"] == "binary_not_supported"
    await sock.send_to(bytes_data=b"\x00")
    assert (await sock.frame())["code"] == "rate_limited"
    await sock.send_to(bytes_data=b"\x00")
    assert await sock.close_code() == 4429


async def test_a_closed_socket_leaves_its_group(ws, alice):
    sock = await ws(alice)
    await sock.until_sync_done()
    group = group_for_user(alice.pk)
    assert len(await group_members(group)) == 1
    await sock.disconnect()
    assert await group_members(group) == []


async def test_a_closing_socket_does_not_wait_for_the_database_thread(ws, alice):
    """
    Channels' websocket_disconnect closes old database connections on the one thread-sensitive worker thread:
    each closing socket waited its turn there, 10,000 in a row on a server's stop (bench/stop.py).
    """
    sock = await ws(alice)
    await sock.until_sync_done()
    busy = asyncio.ensure_future(database_sync_to_async(time.sleep)(1.0))  # the thread is taken for 1 s
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await sock.disconnect()
    took = time.monotonic() - started
    await busy
    assert took < 0.3, f"the close waited {took:.2f}s for the database thread"


async def test_sockets_that_close_at_once_leave_their_groups_on_one_redis_connection(private_redis_layer, socket_factory, make_user):
    """
    A server's stop closes every socket at once (uvicorn: 1012 to each). Each consumer's own ZREM took a
    pooled Redis connection of its own: thousands of new connections, and a 10,000-socket uvicorn still
    stopping after 16.5 s (bench/stop.py). The leaves of one turn of the loop are one pipeline.
    """
    users = [await database_sync_to_async(make_user)() for _ in range(40)]
    sockets = [await socket_factory(u) for u in users]
    for sock in sockets:
        await sock.until_sync_done()
    groups = [group_for_user(u.pk) for u in users]
    assert all([len(await group_members(g)) == 1 for g in groups])
    redis = private_redis_layer.client()
    before = redis.info("stats")["total_connections_received"]
    await asyncio.gather(*(sock.disconnect(code=1012) for sock in sockets))
    opened = redis.info("stats")["total_connections_received"] - before
    redis.close()
    assert all([await group_members(g) == [] for g in groups]), "every socket left its group"
    assert opened <= 1, f"{opened} Redis connections opened for 40 sockets leaving at once"


# --- Long-lived sockets against the real Redis ---------------------------------------------------


async def test_a_long_lived_socket_keeps_receiving_past_the_group_expiry(redis_url, settings, socket_factory, send, alice, bob):
    """channels-redis forgets group members after group_expiry; the consumer re-joins before that."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.BatchingRedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": f"test-{uuid.uuid4().hex[:8]}", "group_expiry": 2},
        }
    }
    channel_layers.backends.clear()
    # Bob's socket does not refresh within the test: it shows that the expiry really bites.
    settings.REALTIME = {**settings.REALTIME, "GROUP_REFRESH_SECONDS": 3600}
    bob_sock = await socket_factory(bob)
    await bob_sock.until_sync_done()
    settings.REALTIME = {**settings.REALTIME, "GROUP_REFRESH_SECONDS": 0.5}
    alice_sock = await socket_factory(alice)
    await alice_sock.until_sync_done()

    await asyncio.sleep(3.2)
    created = await send(alice, bob)
    assert (await alice_sock.frame())["notification"]["id"] == created[0].id
    assert await bob_sock.silent(0.5)
