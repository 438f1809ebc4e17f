"""
A reconnect storm takes turns (realtime/admission.py; bench/JOURNAL.md, finding 66): at most
REALTIME["CONNECT_CONCURRENCY"] sockets of a process authenticate, join and catch up at once, the
others wait for their turn and lose nothing, a socket refused on its turn gives it back, and one
whose turn does not come in time is told to try again later (1013) instead of waiting past the
handshake timeout.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from realtime.consumers import NotificationConsumer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def connect_limit(settings):
    def set_limit(n: int) -> None:
        settings.REALTIME = {**getattr(settings, "REALTIME", {}), "CONNECT_CONCURRENCY": n}

    return set_limit


@contextlib.contextmanager
def connects_in_flight(monkeypatch):
    """How many sockets were inside the consumer's connect at once, at most (each takes 20 ms)."""
    seen = {"now": 0, "max": 0}
    original = NotificationConsumer._connect

    async def slow_connect(self):
        seen["now"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        try:
            await asyncio.sleep(0.02)  # a connect that takes a while, as on a loaded server
            await original(self)
        finally:
            seen["now"] -= 1

    monkeypatch.setattr(NotificationConsumer, "_connect", slow_connect)
    yield seen


async def test_sockets_connecting_together_take_turns_and_each_catches_up(ws, send, alice, connect_limit, monkeypatch):
    connect_limit(2)
    await send(alice, title="while away")
    with connects_in_flight(monkeypatch) as seen:
        socks = await asyncio.gather(*(ws(alice, after=0) for _ in range(8)))
        results = await asyncio.gather(*(sock.until_sync_done(timeout=5) for sock in socks))
    assert seen["max"] == 2
    for frames, done in results:
        assert [f["notification"]["title"] for f in frames] == ["while away"]
        assert done["unread"] == 1


async def test_without_a_limit_every_socket_connects_at_once(ws, alice, connect_limit, monkeypatch):
    connect_limit(0)
    with connects_in_flight(monkeypatch) as seen:
        socks = await asyncio.gather(*(ws(alice) for _ in range(8)))
        await asyncio.gather(*(sock.until_sync_done(timeout=5) for sock in socks))
    assert seen["max"] == 8


async def test_a_socket_refused_on_its_turn_gives_the_turn_back(ws, alice, connect_limit):
    connect_limit(1)
    for _ in range(3):
        refused = await ws(token="not-a-token")
        assert await refused.close_code() == 4401
    sock = await ws(alice)
    _, done = await sock.until_sync_done()
    assert done["type"] == "sync.done"


async def test_a_socket_that_waits_too_long_for_its_turn_is_told_to_try_again_later(ws, alice, bob, settings, monkeypatch):
    settings.REALTIME = {**getattr(settings, "REALTIME", {}), "CONNECT_CONCURRENCY": 1, "CONNECT_QUEUE_SECONDS": 0.2}
    original = NotificationConsumer._connect

    async def one_second_connect(self):
        await asyncio.sleep(1.0)
        await original(self)

    monkeypatch.setattr(NotificationConsumer, "_connect", one_second_connect)
    first = asyncio.create_task(ws(alice))
    await asyncio.sleep(0.05)  # alice's socket has the only turn
    shed = await ws(bob)
    assert shed.connected
    assert await shed.close_code() == 1013
    sock = await first
    _, done = await sock.until_sync_done()
    assert done["type"] == "sync.done"
