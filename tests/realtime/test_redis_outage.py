"""
Redis down: sends are still stored (the database is the record of truth), sockets are closed with a
code that makes clients reconnect, and clients get everything by catch-up once Redis is back.
Each test has its own redis-server, which it kills like a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from inbox.models import Notification
from tests.conftest import access_token_for

from .conftest import RestClient

pytestmark = pytest.mark.django_db(transaction=True)


# --- Consumer (in process) -------------------------------------------------------------------------


async def test_an_open_socket_is_closed_with_1012_when_redis_dies(private_redis_layer, socket_factory, alice):
    sock = await socket_factory(alice)
    await sock.until_sync_done()
    private_redis_layer.stop()
    assert await sock.close_code(timeout=6) == 1012


async def test_a_socket_that_cannot_join_its_group_is_accepted_then_closed_with_1011(private_redis_layer, socket_factory, alice):
    private_redis_layer.stop()
    sock = await socket_factory(alice)
    # Accepted first: a close before accept would be an HTTP 403 that clients do not retry.
    assert sock.connected, f"refused at the handshake with {sock.subprotocol}"
    assert await sock.close_code(timeout=6) == 1011


async def test_a_send_while_redis_is_down_is_stored_and_arrives_by_catch_up(private_redis_layer, socket_factory, send, alice, caplog):
    private_redis_layer.stop()
    with caplog.at_level(logging.WARNING, logger="realtime.publisher"):
        created = [(await send(alice, title=f"#{i}"))[0].id for i in range(3)]
    assert "not sent" in caplog.text
    private_redis_layer.start()
    sock = await socket_factory(alice, after=0)
    frames, done = await sock.until_sync_done()
    assert [f["notification"]["id"] for f in frames] == created
    assert done["last_id"] == created[-1]


# --- Real daphne, real clients ----------------------------------------------------------------------


async def _collect(ws, into: list) -> int | None:
    """Read frames until the socket closes; returns the close code."""
    try:
        async for raw in ws:
            into.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return ws.close_code


@pytest.mark.e2e
async def test_redis_dies_while_sending_and_clients_catch_up_everything_once(daphne_factory, private_redis, make_user, service_account):
    """
    Two users connected through daphne; Redis is killed; N notifications are sent: all 201 and
    stored. Redis comes back; the clients reconnect with ?after=<last id seen> and get every
    notification exactly once.
    """
    from channels.db import database_sync_to_async

    alice, bob = await database_sync_to_async(lambda: (make_user("alice"), make_user("bob")))()
    server = await asyncio.to_thread(daphne_factory, redis_url=private_redis.url, env={"REALTIME_LAYER_CHECK_SECONDS": "0.5"})
    origin = f"http://127.0.0.1:{server.port}"
    tokens = {u.pk: access_token_for(u) for u in (alice, bob)}
    sender = RestClient(server.port, access_token_for(service_account))

    seen: dict[int, list[int]] = {alice.pk: [], bob.pk: []}
    last_id: dict[int, int] = {}
    sockets = {}
    for uid, token in tokens.items():
        ws = await connect(server.ws_url, origin=origin, subprotocols=["bearer", token])
        assert ws.subprotocol == "bearer"
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if frame["type"] == "sync.done":
                last_id[uid] = frame["last_id"]
                break
        sockets[uid] = ws

    # One live notification first, to know the path works.
    status, _ = await asyncio.to_thread(sender.post, "/api/notifications/", {"recipients": [alice.pk, bob.pk], "title": "before"})
    assert status == 201
    for uid, ws in sockets.items():
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["type"] == "notification.created"
        seen[uid].append(frame["notification"]["id"])
        last_id[uid] = frame["notification"]["id"]

    await asyncio.to_thread(private_redis.stop)
    n = 20
    started = time.monotonic()
    statuses = []
    for i in range(n):
        status, _ = await asyncio.to_thread(sender.post, "/api/notifications/", {"recipients": [alice.pk, bob.pk], "title": f"during outage {i}"})
        statuses.append(status)
    outage_send_seconds = time.monotonic() - started
    assert statuses == [201] * n
    stored = await database_sync_to_async(Notification.objects.filter(title__startswith="during outage").count)()
    assert stored == 2 * n

    # The sockets were told to reconnect (1012/1011), not left open and deaf.
    codes = {}
    for uid, ws in sockets.items():
        frames: list = []
        codes[uid] = await asyncio.wait_for(_collect(ws, frames), 10)
        for f in frames:
            if f["type"] == "notification.created":
                seen[uid].append(f["notification"]["id"])
                last_id[uid] = max(last_id[uid], f["notification"]["id"])
    assert set(codes.values()) <= {1011, 1012}, codes

    await asyncio.to_thread(private_redis.start)
    reconnects = 0
    for uid, token in tokens.items():
        # As a client does: reconnect with the last id seen, again after a 1011/1012, with a pause.
        for attempt in range(10):
            try:
                async with connect(f"{server.ws_url}?after={last_id[uid]}", origin=origin, subprotocols=["bearer", token]) as ws:
                    while True:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                        if frame["type"] == "sync.done":
                            break
                        assert frame["catchup"] is True
                        seen[uid].append(frame["notification"]["id"])
                        last_id[uid] = frame["notification"]["id"]
                break
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code in (1011, 1012), exc
                reconnects += 1
                await asyncio.sleep(0.2)
        else:
            pytest.fail("the client never got back in after Redis restarted")

    sender.close()
    expected = await database_sync_to_async(
        lambda: {u: list(Notification.objects.filter(recipient_id=u).order_by("id").values_list("id", flat=True)) for u in seen}
    )()
    for uid in seen:
        assert seen[uid] == expected[uid], "every notification exactly once, in order"
        assert len(seen[uid]) == n + 1
    print(f"\n[redis outage] {n} sends to 2 users with Redis down: all 201 in {outage_send_seconds:.2f}s; close codes {sorted(codes.values())}; "
          f"after restart each client caught up {n} notifications, none twice ({reconnects} extra reconnect(s))")
