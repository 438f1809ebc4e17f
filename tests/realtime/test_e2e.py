"""
End to end: a real daphne process, the real Redis, real websockets clients, REST over HTTP.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import access_token_for

from .conftest import RestClient, open_client, recv_json

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def people(make_user, service_account):
    return make_user("alice"), make_user("bob"), service_account


async def test_a_rest_send_reaches_the_recipients_socket_and_no_one_else(daphne_factory, redis_url, people):
    alice, bob, sender_user = people
    server = await asyncio.to_thread(daphne_factory, redis_url=redis_url)
    alice_ws, done = await open_client(server, access_token_for(alice))
    assert alice_ws.subprotocol == "bearer"
    assert done == {"type": "sync.done", "last_id": 0, "unread": 0, "more": False, "seq": 0}
    bob_ws, _ = await open_client(server, access_token_for(bob), via="query")
    sender = RestClient(server.port, access_token_for(sender_user))

    latencies = []
    for i in range(20):
        started = time.perf_counter()
        status, body = await asyncio.to_thread(sender.post, "/api/notifications/", {"recipient": "alice", "title": f"Ping {i}", "data": {"i": i}})
        frame = await recv_json(alice_ws)
        latencies.append((time.perf_counter() - started) * 1000)
        assert status == 201
        assert frame == {"type": "notification.created", "notification": body, "unread": i + 1, "seq": body["id"]}
    with pytest.raises(asyncio.TimeoutError):
        await recv_json(bob_ws, timeout=0.3)
    sender.close()
    await alice_ws.close()
    await bob_ws.close()
    latencies.sort()
    print(
        f"\n[e2e latency] REST send -> WebSocket frame through daphne + Redis, 20 sequential sends: "
        f"p50 {statistics.median(latencies):.1f} ms, p90 {latencies[17]:.1f} ms, max {latencies[-1]:.1f} ms"
    )
    print(f"[e2e frame] {frame}")


async def test_the_token_in_the_query_string_never_reaches_daphnes_access_log(daphne_factory, redis_url, people):
    alice, _, _ = people
    server = await asyncio.to_thread(daphne_factory, redis_url=redis_url)
    token = access_token_for(alice)
    ws, done = await open_client(server, token, via="query")
    await ws.send('{"type": "ping"}')
    assert await recv_json(ws) == {"type": "pong"}
    await ws.close()
    # A refused token is not logged either.
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    async with connect(f"{server.ws_url}?token={bad}", origin=f"http://127.0.0.1:{server.port}") as refused:
        with pytest.raises(ConnectionClosed):
            await refused.recv()
    await asyncio.sleep(0.3)  # let daphne write its WSDISCONNECT lines
    log = server.read_log()
    assert "WSCONNECT /ws/notifications/" in log, log[-2000:]
    assert token not in log
    assert bad not in log
    assert "token=" not in log


async def test_handshake_refusals_and_close_codes_cross_daphne(daphne_factory, redis_url, people, settings):
    alice, _, _ = people
    server = await asyncio.to_thread(daphne_factory, redis_url=redis_url, env={"REALTIME_MAX_FRAME_BYTES": "1024"})
    # A foreign Origin: refused at the handshake.
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.ws_url, origin="https://evil.example", subprotocols=["bearer", access_token_for(alice)])
    assert refused.value.response.status_code == 403
    # A bad token: accepted, then 4401 reaches the client.
    async with connect(server.ws_url, origin=f"http://127.0.0.1:{server.port}", subprotocols=["bearer", "not.a.jwt"]) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4401
    # An oversized frame: 1009.
    ws, _ = await open_client(server, access_token_for(alice))
    await ws.send('{"type": "ping", "pad": "' + "x" * 2000 + '"}')
    with pytest.raises(ConnectionClosed) as closed:
        await recv_json(ws)
    assert closed.value.rcvd.code == 1009


async def test_the_publisher_batches_sends_under_daphne(daphne_factory, private_redis, people, make_user):
    """
    Under daphne, fan-out goes through the publisher on the server loop: a bulk send is one
    script call to Redis (the members and the push), and sends that arrive while Redis is slow
    leave together.
    """
    alice, bob, sender_user = people
    carol = await database_sync_to_async(make_user)("carol")
    # Generous Redis timeouts: the stall below must delay the push, not fail it.
    env = {"REALTIME_SEND_TIMEOUT": "6", "REDIS_SOCKET_TIMEOUT": "6"}
    server = await asyncio.to_thread(daphne_factory, redis_url=private_redis.url, env=env)
    sockets = {}
    for user in (alice, bob, carol):
        sockets[user.pk], _ = await open_client(server, access_token_for(user))
    sender = RestClient(server.port, access_token_for(sender_user))

    with private_redis.monitor() as lines:
        status, _ = await asyncio.to_thread(sender.post, "/api/notifications/", {"recipients": ["alice", "bob", "carol"], "title": "Bulk"})
        assert status == 201
        for pk, ws in sockets.items():
            assert (await recv_json(ws))["notification"]["recipient"] == pk
    # One script call names the three group keys, reads their members and pushes (bench/JOURNAL.md, finding 52).
    scripts = private_redis.client_commands(lines, "eval")
    assert len(scripts) == 1, scripts
    assert "ZRANGE" in scripts[0] and "ZADD" in scripts[0], scripts
    assert all(f"inbox.user.{u.pk}" in scripts[0] for u in (alice, bob, carol)), scripts

    # Redis stops answering for 2 s; meanwhile ten sends are made. None waits on Redis; the first
    # batch does, the others queue and leave together when it answers again.
    with private_redis.monitor() as lines:
        slow = threading.Thread(target=lambda: private_redis.client().execute_command("DEBUG", "SLEEP", "2.0"))
        slow.start()
        await asyncio.sleep(0.1)
        started = time.monotonic()
        each = []
        for i in range(10):
            t0 = time.monotonic()
            status, _ = await asyncio.to_thread(sender.post, "/api/notifications/", {"recipient": "alice", "title": f"While slow {i}"})
            each.append(round(time.monotonic() - t0, 3))
            assert status == 201
        sends_took = time.monotonic() - started
        titles = [(await recv_json(sockets[alice.pk]))["notification"]["title"] for _ in range(10)]
        slow.join()
    assert titles == [f"While slow {i}" for i in range(10)]
    evals = len(private_redis.client_commands(lines, "eval", "ZADD"))
    assert max(each) < 1.0, f"a send took {max(each):.2f}s: it waited on Redis ({each})"
    assert sends_took < 2.0, f"the sends took {sends_took:.2f}s, longer than the stall: the test proves nothing"
    assert 1 <= evals <= 3, f"{evals} push script calls for 10 sends: the publisher did not batch"
    print(f"\n[publisher] bulk send to 3 users: 1 EVAL; 10 sends during a 2 s Redis stall took {sends_took:.2f}s (slowest {max(each) * 1000:.0f} ms) and left in {evals} push EVAL call(s)")
    sender.close()
    for ws in sockets.values():
        await ws.close()
