"""
The server (daphne, and uvicorn as the image runs it) stopped with SIGTERM in the middle of a send
burst and started again on the same port.
Senders retry with their Idempotency-Key; clients reconnect and catch up. Nothing is lost and
nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest
from channels.db import database_sync_to_async

from .conftest import db_ids_by_user, stop_clients, users_online, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


def _count_rows() -> int:
    from inbox.models import Notification

    return Notification.objects.count()


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_the_server_stopped_with_sigterm_under_load_and_restarted_loses_nothing(daphne_factory, private_redis, figures, kind):
    redis = private_redis()
    server = daphne_factory(server=kind, redis_url=redis.url)
    users, sender, clients, http = await users_online(server, 30, concurrency=16)

    total, stop_after = 600, 200
    done = 0
    results = []
    events: dict[str, float] = {}
    sem = asyncio.Semaphore(16)
    restart_done = asyncio.Event()

    async def restart():
        events["sigterm"] = time.monotonic()
        await asyncio.to_thread(server.stop, signal.SIGTERM)
        events["stopped"] = time.monotonic()
        await asyncio.to_thread(server.start)
        events["started"] = time.monotonic()
        restart_done.set()

    restarter = None

    async def send(i: int):
        nonlocal done, restarter
        async with sem:
            body = {"recipient": users[i % len(users)].pk, "title": f"d{i}"}
            result = await http.send(body, key=f"burst-{i}", retry_until=time.monotonic() + 60)
            results.append(result)
            done += 1
            if done == stop_after:
                restarter = asyncio.create_task(restart())

    try:
        await asyncio.gather(*(send(i) for i in range(total)))
        if restarter is not None:
            await restarter
        expected = await database_sync_to_async(db_ids_by_user)([u.pk for u in users])

        def complete() -> bool:
            return all(set(c.held) == expected[c.user_id] for c in clients)

        await wait_until(complete, 30)
        caught_up = time.monotonic() - events["started"]
    finally:
        await stop_clients(clients)
        http.close()

    statuses = Counter(r[0] for r in results)
    replayed = sum(1 for r in results if r[1].get("Idempotent-Replayed") == "true")
    retried = sum(1 for r in results if r[4] > 1)
    stored = await database_sync_to_async(_count_rows)()
    closes = Counter(code for c in clients for code in c.close_codes)
    figures.update(
        sent=total, answered_201=statuses.get(201, 0), statuses=dict(statuses), retried_sends=retried,
        replayed_by_idempotency_key=replayed, stored=stored, delivered=sum(len(c.held) for c in clients),
        duplicates=sum(c.duplicates for c in clients), foreign=sum(c.foreign for c in clients),
        reconnects=sum(c.connections - 1 for c in clients), close_codes={str(k): v for k, v in closes.items()},
        sigterm_to_exit_s=round(events["stopped"] - events["sigterm"], 2),
        restart_s=round(events["started"] - events["stopped"], 2), caught_up_s_after_start=round(caught_up, 2),
    )
    assert statuses == {201: total}, f"every send ends in 201 after retries: {statuses}"
    assert stored == total, "a retried send was stored twice or a send was lost"
    wrong = [(c.user_id, len(c.held), len(expected[c.user_id])) for c in clients if set(c.held) != expected[c.user_id]]
    assert not wrong, f"clients that do not hold exactly their notifications: {wrong[:10]}"
    assert sum(c.duplicates for c in clients) == 0 and sum(c.foreign for c in clients) == 0
    assert all(c.connections >= 2 for c in clients), "every client reconnected to the new process"
    # It exits by itself (the harness would SIGKILL it after 10 s): request threads waiting on the
    # stopped event loop no longer hold the process (server/patches/daphne.py, exit_promptly_after_shutdown).
    assert events["stopped"] - events["sigterm"] < 5, f"{kind} took {events['stopped'] - events['sigterm']:.1f}s to exit on SIGTERM"


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_sockets_open_when_the_server_gets_sigterm_are_closed_with_1012_not_dropped(daphne_factory, make_user, kind):
    import websockets

    from tests.conftest import access_token_for

    server = daphne_factory(server=kind)
    users = [await database_sync_to_async(make_user)() for _ in range(5)]
    sockets = [
        await websockets.connect(server.ws_url, subprotocols=["bearer", access_token_for(u)], open_timeout=10)
        for u in users
    ]
    for ws in sockets:  # each gets its hello before the stop
        await asyncio.wait_for(ws.recv(), 10)
    started = time.monotonic()
    await asyncio.to_thread(server.stop, signal.SIGTERM)
    assert time.monotonic() - started < 5
    for ws in sockets:
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert [ws.close_code for ws in sockets] == [1012] * 5
    assert {ws.close_reason for ws in sockets} == {"server restart"}
