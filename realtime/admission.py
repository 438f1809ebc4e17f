"""
A connect storm must not starve the sockets already open.

When a server restarts, every one of its clients reconnects within a second or two. Each connect
checks its token against the database, joins its group in Redis, reads the database again and
sends its catch-up; thousands of them at once on one event loop make every turn of the loop long,
so Redis replies (joins, the watchdog's check) wait behind them past REALTIME['SEND_TIMEOUT'] and
handshakes past daphne's connect timeout. Sockets then failed to join (1011), were refused (403),
the watchdog took its slow check for a lost Redis and closed every socket of the process (1012), and
each wave of retries met the next: 10,000 sockets on two processes had not all come back after
two minutes (bench/JOURNAL.md, finding 66).

So a process lets at most REALTIME['CONNECT_CONCURRENCY'] sockets do that work at a time; the
others wait for their turn, in arrival order, before anything is read for them (a pending future
each). A waiting socket has joined nothing, so it misses nothing: its catch-up runs after its join.
The wait counts toward the server's handshake timeout (daphne's ``--websocket_connect_timeout``,
which the image sets to 30 s), so it is bounded: a socket that waited REALTIME['CONNECT_QUEUE_SECONDS']
(10) is closed with 1013 (try again later) at once, and its client backs off. Unbounded, 50,000 clients
queued at four processes waited past the handshake timeout, their turns came after daphne had refused
them, and none had come back after four minutes (finding 67): a queue whose clients give up must shed. The
turn ends when the consumer's connect is done (sync.done sent, or the socket refused), or when the
application returns. 0 turns the gate off.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from .auth import BEARER
from .conf import realtime_setting
from .protocol import CLOSE_TRY_AGAIN_LATER

SCOPE_KEY = "inbox.connect_turn"

logger = logging.getLogger(__name__)

#: Sockets this process closed with 1013 because their turn did not come in time (logged every 1,000th).
shed = 0

_gates: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


class Turn:
    """A socket's turn at connecting; ``release()`` ends it (once, whoever calls it first)."""

    __slots__ = ("_gate",)

    def __init__(self, gate: asyncio.Semaphore | None) -> None:
        self._gate = gate

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.release()


async def take_turn() -> Turn | None:
    """
    Wait until fewer than REALTIME['CONNECT_CONCURRENCY'] sockets of this process are connecting;
    None when that took more than REALTIME['CONNECT_QUEUE_SECONDS'].
    """
    limit = realtime_setting("CONNECT_CONCURRENCY")
    if not limit:
        return Turn(None)
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(limit)
    try:
        await asyncio.wait_for(gate.acquire(), realtime_setting("CONNECT_QUEUE_SECONDS"))
    except TimeoutError:
        return None
    return Turn(gate)


def end_turn(scope) -> None:
    """The consumer's connect is done: the next socket may start."""
    turn = scope.get(SCOPE_KEY)
    if turn is not None:
        turn.release()


class ConnectGate:
    """ASGI middleware: a socket's connect (authentication included) waits for its turn."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        turn = await take_turn()
        if turn is None:
            await _try_again_later(scope, receive, send)
            return
        try:
            return await self.inner({**scope, SCOPE_KEY: turn}, receive, send)
        finally:
            turn.release()


async def _try_again_later(scope, receive, send) -> None:
    """Accept, then close with 1013: a close before accept would be an HTTP 403 without the code."""
    global shed
    shed += 1
    if shed % 1000 == 1:
        logger.warning("connect storm: %d socket(s) closed with 1013 after waiting %gs for a turn", shed, realtime_setting("CONNECT_QUEUE_SECONDS"))
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # the client left while it waited
    subprotocols = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": BEARER if subprotocols[:1] == [BEARER] else None})
    await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})
