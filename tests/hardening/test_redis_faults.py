"""
Redis faults under real processes: daphne, a private redis-server killed and restarted, and a
"Redis" that accepts connections and never answers. The database is the record of truth: a send
never waits on Redis, and every client recovers what Redis lost by catching up.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis as redis_py
from channels.db import database_sync_to_async

from .conftest import (
    HttpSender,
    db_ids_by_user,
    make_sender,
    make_users,
    percentile,
    start_clients,
    stop_clients,
    token_for_id,
    users_online,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def _count_rows() -> int:
    from inbox.models import Notification

    return Notification.objects.count()


async def _assert_every_client_holds_exactly_its_own(clients, expected: dict[int, set[int]], timeout: float) -> None:
    def complete() -> bool:
        return all(set(c.held) == expected[c.user_id] for c in clients)

    await wait_until(complete, timeout)
    wrong = [(c.user_id, len(c.held), len(expected[c.user_id]), c.close_codes[-5:]) for c in clients if set(c.held) != expected[c.user_id]]
    assert not wrong, f"{len(wrong)} client(s) do not hold exactly their notifications (user, held, expected, closes): {wrong[:10]}"
    assert sum(c.foreign for c in clients) == 0, "a client received another user's notification"
    assert sum(c.duplicates for c in clients) == 0, "a client received the same notification twice"


async def test_a_redis_kill_during_1000_sends_to_50_users_loses_nothing(daphne_factory, private_redis, figures):
    redis = private_redis()
    server = daphne_factory(redis_url=redis.url)
    users, sender, clients, http = await users_online(server, 50, concurrency=16)

    total, kill_after, restart_after = 1000, 300, 700
    done = 0
    events: dict[str, float] = {}
    results = []
    sem = asyncio.Semaphore(16)

    async def send(i: int):
        nonlocal done
        async with sem:
            user = users[i % len(users)]
            status, _, body, elapsed, _ = await http.send({"recipient": user.pk, "title": f"n{i}"})
            results.append((status, elapsed))
            done += 1
            if done == kill_after:
                redis.kill()
                events["killed"] = time.monotonic()
            elif done == restart_after:
                await asyncio.to_thread(redis.start)
                events["restarted"] = time.monotonic()

    started = time.monotonic()
    try:
        await asyncio.gather(*(send(i) for i in range(total)))
        send_seconds = time.monotonic() - started
        expected = await database_sync_to_async(db_ids_by_user)([u.pk for u in users])
        await _assert_every_client_holds_exactly_its_own(clients, expected, timeout=30)
        recovered = time.monotonic() - events["restarted"]
    finally:
        await stop_clients(clients)
        http.close()

    statuses = Counter(s for s, _ in results)
    latencies = [e for _, e in results]
    stored = await database_sync_to_async(_count_rows)()
    closes = Counter(code for c in clients for code in c.close_codes)
    figures.update(
        sent=total, answered_201=statuses.get(201, 0), statuses=dict(statuses), stored=stored,
        delivered=sum(len(c.held) for c in clients), delivered_live=sum(len(c.live_ids) for c in clients),
        duplicates=sum(c.duplicates for c in clients), foreign=sum(c.foreign for c in clients),
        reconnects=sum(c.connections - 1 for c in clients), close_codes=dict(closes),
        send_p50_ms=round(percentile(latencies, 50) * 1000, 1), send_max_ms=round(max(latencies) * 1000, 1),
        send_seconds=round(send_seconds, 2), caught_up_within_s_of_redis_restart=round(recovered, 2),
    )
    assert statuses == {201: total}, f"every send answers 201: {statuses}"
    assert stored == total
    assert sum(len(v) for v in expected.values()) == total


async def test_a_redis_restart_under_200_sockets_leaves_none_open_and_deaf(daphne_factory, private_redis, figures):
    redis = private_redis()
    server = daphne_factory(redis_url=redis.url)
    users = await database_sync_to_async(make_users)(100)
    sender = await database_sync_to_async(make_sender)()
    # Two sockets per user: 200 sockets.
    pairs = [(u.pk, token_for_id(u.pk)) for u in users for _ in range(2)]
    clients = await start_clients(server, pairs)
    http = HttpSender(server.url, token_for_id(sender.pk), concurrency=16)
    try:
        # Before: live delivery works.
        statuses = await asyncio.gather(*(http.send({"recipient": u.pk, "title": "before"}) for u in users))
        assert all(s[0] == 201 for s in statuses)
        assert await wait_until(lambda: all(len(c.held) == 1 for c in clients), 15), "live delivery before the restart"
        connections_before = [c.connections for c in clients]

        redis.kill()
        await asyncio.to_thread(redis.start)
        restarted = time.monotonic()
        # Sends right after the restart: the sockets that were open must either get them live or
        # be closed (and then catch up on reconnect).
        after = await asyncio.gather(*(http.send({"recipient": u.pk, "title": "after"}) for u in users))
        assert all(s[0] == 201 for s in after)
        expected = await database_sync_to_async(db_ids_by_user)([u.pk for u in users])
        await _assert_every_client_holds_exactly_its_own(clients, expected, timeout=30)
        converged = time.monotonic() - restarted

        # And a third round, once things settled: live again on every socket.
        third = await asyncio.gather(*(http.send({"recipient": u.pk, "title": "third"}) for u in users))
        assert all(s[0] == 201 for s in third)
        expected = await database_sync_to_async(db_ids_by_user)([u.pk for u in users])
        await _assert_every_client_holds_exactly_its_own(clients, expected, timeout=20)
    finally:
        await stop_clients(clients)
        http.close()

    reconnected = sum(1 for c, before in zip(clients, connections_before) if c.connections > before)
    kept = len(clients) - reconnected
    closes = Counter(code for c in clients for code in c.close_codes)
    figures.update(
        sockets=len(clients), closed_and_reconnected=reconnected, stayed_open_and_working=kept,
        close_codes=dict(closes), sent=3 * len(users), stored=sum(len(v) for v in expected.values()),
        delivered=sum(len(c.held) for c in clients), duplicates=sum(c.duplicates for c in clients),
        converged_s=round(converged, 2),
    )
    # Every socket that stayed open got "after" live (a deaf one would have had to reconnect to get it).
    for c, before in zip(clients, connections_before):
        if c.connections == before:
            after_ids = {i for i, n in c.held.items() if n["title"] == "after"}
            assert after_ids <= c.live_ids, f"socket of user {c.user_id} stayed open but did not get live events"


async def test_a_redis_that_never_answers_does_not_slow_sends_or_pile_up_workers(daphne_factory, hanging_redis, figures):
    bound = 2.0
    server = daphne_factory(
        redis_url=hanging_redis.url,
        env={"REDIS_SOCKET_TIMEOUT": "1", "REDIS_CONNECT_TIMEOUT": "1", "REALTIME_SEND_TIMEOUT": "1"},
    )
    users = await database_sync_to_async(make_users)(20)
    sender = await database_sync_to_async(make_sender)()
    http = HttpSender(server.url, token_for_id(sender.pk), concurrency=8)
    threads_before = _threads(server.proc.pid)
    try:
        # A WebSocket cannot join its group: it is closed (1011), not left open and deaf, within the bound.
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        t0 = time.monotonic()
        ws = await connect(f"{server.ws_url}?after=0", origin=server.url, subprotocols=["bearer", token_for_id(users[0].pk)], compression=None)
        try:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), bound + 3)
        finally:
            await ws.close()
        ws_closed_s = time.monotonic() - t0
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011

        results = []
        sem = asyncio.Semaphore(8)

        async def send(i):
            async with sem:
                results.append(await http.send({"recipient": users[i % len(users)].pk, "title": f"h{i}"}))

        started = time.monotonic()
        await asyncio.gather(*(send(i) for i in range(300)))
        send_seconds = time.monotonic() - started
        # Bulk sends too.
        bulk = await http.send({"recipients": [u.pk for u in users], "title": "bulk"})
        await asyncio.sleep(3)  # let the fan-out give up on what it queued
        threads_after = _threads(server.proc.pid)
        health = await http.request("GET", "/healthz")
        redis_conns = hanging_redis.open_connections()
    finally:
        http.close()

    latencies = [r[3] for r in results] + [bulk[3]]
    stored = await database_sync_to_async(_count_rows)()
    figures.update(
        sent=301, answered_201=sum(1 for r in results if r[0] == 201) + (bulk[0] == 201), stored=stored,
        send_p50_ms=round(percentile(latencies, 50) * 1000, 1), send_p99_ms=round(percentile(latencies, 99) * 1000, 1),
        send_max_ms=round(max(latencies) * 1000, 1), bound_ms=bound * 1000, send_seconds=round(send_seconds, 2),
        daphne_threads_before=threads_before, daphne_threads_after=threads_after,
        connections_held_to_hanging_redis=redis_conns, websocket_closed_1011_after_s=round(ws_closed_s, 2),
    )
    assert all(r[0] == 201 for r in results) and bulk[0] == 201
    assert stored == 300 + len(users)
    assert max(latencies) < bound, f"a send took {max(latencies):.2f}s with Redis hanging (bound {bound}s)"
    assert health[0] == 200 and health[3] < 1.0
    # No pile-up: daphne's thread pool stays bounded and connections to the hung Redis are few.
    assert threads_after <= threads_before + 40
    assert redis_conns <= 20, f"{redis_conns} connections left hanging on the unresponsive Redis"


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


async def test_idle_sockets_stay_open_and_hear_events_past_the_redis_socket_timeout(daphne_factory, private_redis, figures):
    """The receive loop's blocking pop must return before REDIS_SOCKET_TIMEOUT, or idle sockets get closed."""
    redis = private_redis()
    server = daphne_factory(redis_url=redis.url, env={"REDIS_SOCKET_TIMEOUT": "1"})
    users, sender, clients, http = await users_online(server, 3, concurrency=3)
    try:
        await asyncio.sleep(4)  # four socket timeouts without a single message
        results = await asyncio.gather(*(http.send({"recipient": u.pk, "title": "after a quiet while"}) for u in users))
        assert all(r[0] == 201 for r in results)
        assert await wait_until(lambda: all(len(c.live_ids) == 1 for c in clients), 10)
    finally:
        await stop_clients(clients)
        http.close()
    figures.update(idle_s=4, redis_socket_timeout_s=1, close_codes=[c.close_codes for c in clients], connections=[c.connections for c in clients])
    assert all(c.connections == 1 and c.close_codes == [1000] for c in clients), [c.close_codes for c in clients]


async def test_two_redis_shards_spread_the_groups_and_one_killed_and_restarted_loses_nothing(daphne_factory, private_redis, figures):
    shards = [private_redis(), private_redis()]
    server = daphne_factory(env={"REDIS_URLS": ",".join(r.url for r in shards)})
    users, sender, clients, http = await users_online(server, 40, concurrency=16)
    groups_per_shard = [len(redis_py.Redis.from_url(r.url).keys("asgi:group:*")) for r in shards]

    total, kill_after, restart_after = 600, 200, 400
    done = 0
    events: dict[str, float] = {}
    statuses: Counter = Counter()
    sem = asyncio.Semaphore(16)

    async def send(i: int):
        nonlocal done
        async with sem:
            status, *_ = await http.send({"recipient": users[i % len(users)].pk, "title": f"s{i}"})
            statuses[status] += 1
            done += 1
            if done == kill_after:
                shards[1].kill()
                events["killed"] = time.monotonic()
            elif done == restart_after:
                await asyncio.to_thread(shards[1].start)
                events["restarted"] = time.monotonic()

    try:
        await asyncio.gather(*(send(i) for i in range(total)))
        expected = await database_sync_to_async(db_ids_by_user)([u.pk for u in users])
        await _assert_every_client_holds_exactly_its_own(clients, expected, timeout=30)
        recovered = time.monotonic() - events["restarted"]
    finally:
        await stop_clients(clients)
        http.close()

    figures.update(
        groups_per_shard=groups_per_shard, sent=total, statuses=dict(statuses),
        delivered=sum(len(c.held) for c in clients), delivered_live=sum(len(c.live_ids) for c in clients),
        reconnects=sum(c.connections - 1 for c in clients),
        close_codes=dict(Counter(code for c in clients for code in c.close_codes)),
        caught_up_within_s_of_shard_restart=round(recovered, 2),
    )
    assert all(n > 0 for n in groups_per_shard), f"both shards hold groups: {groups_per_shard}"
    assert sum(groups_per_shard) == len(users)
    assert statuses == {201: total}, f"every send answers 201 while a shard is down: {statuses}"
    assert await database_sync_to_async(_count_rows)() == total
