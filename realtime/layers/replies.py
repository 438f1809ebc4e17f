"""Redis replies bounded by the time an event loop had to read them, not by the wall clock."""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Awaitable

logger = logging.getLogger(__name__)

#: A loop that spent this share of a call's wait running other work (its timer fired that late) was
#: too busy to tell a slow Redis from its own backlog.
BUSY_SHARE = 0.1


class LoopLag:
    """
    How late an event loop has been running its timers while replies are awaited: a timer every
    ``PERIOD`` seconds records how late it fired, for as long as one ``wait_reply`` call is pending
    (no timer on a loop awaiting nothing; in a server process with a socket open, always, since
    its pump always awaits a BZPOPMIN). It holds no reference to its loop, so a loop of
    ``async_to_sync`` or ``asyncio.run`` is freed with its entry here.

    One long turn shows in the first turn after a call's time is up; a storm of reconnects shows
    here instead: every turn only tens of milliseconds, but a reply that needs a dozen turns to be
    read waits longer than the call's period (bench/JOURNAL.md, finding 73).
    """

    PERIOD = 0.05

    def __init__(self) -> None:
        self.pending = 0
        self.samples: collections.deque = collections.deque(maxlen=1024)  # (when it fired, how late)
        self._due: float | None = None

    def enter(self, loop: asyncio.AbstractEventLoop) -> float:
        self.pending += 1
        if self._due is None:
            self._due = loop.time() + self.PERIOD
            loop.call_at(self._due, self._tick, loop)
        return loop.time()

    def leave(self) -> None:
        self.pending -= 1

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self.samples.append((now, now - self._due))
        if self.pending <= 0:
            self._due = None
            return
        self._due = now + self.PERIOD
        loop.call_at(self._due, self._tick, loop)

    def busy_share(self, loop: asyncio.AbstractEventLoop, since: float) -> float:
        """The share of the time since ``since`` the loop's timer fired late."""
        span = loop.time() - since
        if span <= 0:
            return 0.0
        late = 0.0
        for when, by in reversed(self.samples):
            if when < since:
                break
            late += by
        return late / span


_lags: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def loop_lag(loop: asyncio.AbstractEventLoop) -> LoopLag:
    lag = _lags.get(loop)
    if lag is None:
        lag = _lags[loop] = LoopLag()
    return lag


async def wait_reply(awaitable: Awaitable, timeout: float | None):
    """
    Await a Redis reply for at most ``timeout`` seconds of an event loop that is free to run it.

    redis-py bounds each read by ``socket_timeout`` with ``asyncio.timeout``, which cancels the
    reading task once the wall-clock time is up. When a process delivers a broadcast, thousands of
    socket sends are queued on its event loop; a reply that came in time waits behind them for its
    turn, and the cancellation wins. bench/ saw it: a pump read "timed out" during a 5,000-socket
    broadcast and the process closed all its sockets (1012). The patient clients have no read
    timeout; here, when the time is up, the loop's own lag is measured first. The loop is behind
    when one turn of it takes a quarter of the period, or when its timer ran late for a tenth of
    the wait (``LoopLag``: a reconnect storm's many short turns); then the reply is likely waiting
    to be read and we wait another period (up to ten in all). If the loop is idle, Redis is not
    answering, the call is cancelled and TimeoutError is raised.

    The call runs in the caller's task, under a deadline that only this check moves. A task of its
    own and an ``asyncio.wait`` per call took two more turns of a busy loop each: three of them
    nested on a fan-out's way to Redis, and each turn of a server's loop under load takes
    milliseconds (bench/JOURNAL.md, finding 48).
    """
    if timeout is None:
        return await awaitable
    loop = asyncio.get_running_loop()
    lag = loop_lag(loop)
    check: asyncio.Handle | None = None
    began = lag.enter(loop)
    try:
        give_up = began + 10 * timeout
        async with asyncio.timeout(None) as deadline:

            def time_is_up() -> None:
                nonlocal check
                started = loop.time()
                waited_from = started - timeout

                def after_one_turn() -> None:
                    nonlocal check
                    turn = loop.time() - started
                    busy = lag.busy_share(loop, waited_from)
                    if (turn < timeout / 4 and busy < BUSY_SHARE) or loop.time() >= give_up:
                        deadline.reschedule(loop.time())  # cancels the call: TimeoutError below
                        return
                    logger.info(
                        "channel layer: event loop behind (a turn of %.2fs, late %.0f%% of the last %gs); waiting for Redis' reply another %gs",
                        turn, 100 * busy, timeout, timeout,
                    )
                    check = loop.call_later(timeout, time_is_up)

                check = loop.call_soon(after_one_turn)

            check = loop.call_later(timeout, time_is_up)
            try:
                return await awaitable
            finally:
                check.cancel()
    except TimeoutError:
        if deadline.expired():
            raise TimeoutError(f"Redis did not answer within {timeout:g}s") from None
        raise  # the call's own
    finally:
        lag.leave()
