"""Redis replies bounded by the time an event loop had to read them, not by the wall clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

logger = logging.getLogger(__name__)


async def wait_reply(awaitable: Awaitable, timeout: float | None):
    """
    Await a Redis reply for at most ``timeout`` seconds of an event loop that is free to run it.

    redis-py bounds each read by ``socket_timeout`` with ``asyncio.timeout``, which cancels the
    reading task once the wall-clock time is up. When a process delivers a broadcast, thousands of
    socket sends are queued on its event loop; a reply that came in time waits behind them for its
    turn, and the cancellation wins. bench/ saw it: a pump read "timed out" during a 5,000-socket
    broadcast and the process closed all its sockets (1012). The patient clients have no read
    timeout; here, when the time is up, the loop's own lag is measured first: if one turn of the
    loop takes that long, the reply is likely waiting to be read and we wait another period (up to
    ten in all); if the loop is idle, Redis is not answering, the call is cancelled and
    TimeoutError is raised.

    The call runs in the caller's task, under a deadline that only this check moves. A task of its
    own and an ``asyncio.wait`` per call took two more turns of a busy loop each: three of them
    nested on a fan-out's way to Redis, and each turn of a server's loop under load takes
    milliseconds (bench/JOURNAL.md, finding 48).
    """
    if timeout is None:
        return await awaitable
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 10 * timeout
    check: asyncio.Handle | None = None
    try:
        async with asyncio.timeout(None) as deadline:

            def time_is_up() -> None:
                nonlocal check
                started = loop.time()

                def after_one_turn() -> None:
                    nonlocal check
                    lag = loop.time() - started
                    if lag < timeout / 4 or loop.time() >= give_up:
                        deadline.reschedule(loop.time())  # cancels the call: TimeoutError below
                        return
                    logger.info("channel layer: event loop %.2fs behind; waiting for Redis' reply another %gs", lag, timeout)
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
