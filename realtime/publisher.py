"""
The publisher: the one module that sends to the channel layer.

It owns group names and sending. The delivery backend (realtime/delivery.py) calls ``publish`` after
commit only, so nothing is pushed before its row is committed. The database is the record of truth:
an event that cannot be sent (Redis down or hanging) is logged and dropped, and the client gets the
notification by catch-up.

How an event leaves the process:
- In a server process, ``bind_loop()`` records the server's event loop. A publish from a request
  thread hands the events to that loop and returns at once; a background task sends everything
  queued in one pipelined call per batch (``group_send_many``), with a timeout.
- Elsewhere (management commands, the shell, WSGI) there is no server loop, so the events are sent
  synchronously, with the same timeout.

Tests record what leaves the process by replacing ``publish`` (tests/inbox/conftest.py's ``pushed``)
and reach the bound publisher through ``current()``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .conf import realtime_setting
from .layers.replies import wait_reply

logger = logging.getLogger(__name__)

Event = tuple[Any, dict[str, Any]]  # (user id: any primary key, channel-layer message; realtime.protocol renders them)


def group_for_user(user_id) -> str:
    """
    The channel-layer group of every open socket of one user, for any primary key: an integer as it
    is (the common case, and the benchmarked one), anything else through ``_group_for_key``.
    """
    if type(user_id) is int:
        return f"inbox.user.{user_id}"
    return _group_for_key(user_id)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


@functools.lru_cache(maxsize=65_536)
def _group_for_key(user_id) -> str:
    """
    A group name for a key that is not an int. Channels allows only ASCII letters, digits, ``-``,
    ``_`` and ``.`` in fewer than 100 characters, and a string key may hold anything, so one is
    named by a digest (``s`` + 40 hex digits: never an integer's or a UUID's name). Every form of
    one key gives one name: a UUID and its canonical text, an integer and its canonical decimal
    text; "042" is not 42 (as a string key it is another user).
    """
    if isinstance(user_id, uuid.UUID):
        return f"inbox.user.{user_id.hex}"
    if isinstance(user_id, int):  # a bool or an int subclass
        return f"inbox.user.{int(user_id)}"
    text = str(user_id)
    if text.isascii() and text.isdigit() and text == str(int(text)):
        return f"inbox.user.{text}"
    if _CANONICAL_UUID.match(text):
        return f"inbox.user.{uuid.UUID(text).hex}"
    return "inbox.user.s" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def publish(events: Sequence[Event]) -> None:
    """Send events to their users' groups. Never raises: failures are logged."""
    if not events:
        return
    try:
        _dispatch(list(events))
    except Exception:  # a push must never break the write that caused it
        logger.exception("fan-out: could not dispatch %d event(s)", len(events))


def _dispatch(events: list[Event]) -> None:
    publisher = _publisher
    if publisher is not None and publisher.usable():
        publisher.submit_threadsafe(events)
        return
    async_to_sync(send_now)(events)


async def send_now(events: Sequence[Event]) -> bool:
    """Send events through the channel layer within REALTIME['SEND_TIMEOUT']; False if given up."""
    layer = get_channel_layer()
    if layer is None:
        return False
    messages = [(group_for_user(uid), msg) for uid, msg in events]
    timeout = realtime_setting("SEND_TIMEOUT")
    try:
        if hasattr(layer, "group_send_many"):
            await wait_reply(layer.group_send_many(messages), timeout)
        else:
            await asyncio.wait_for(asyncio.gather(*(layer.group_send(g, m) for g, m in messages)), timeout)
        return True
    except Exception as exc:  # ConnectionError, TimeoutError, anything from the layer
        logger.warning(
            "fan-out: %d event(s) not sent (%s: %s); clients will catch up from the database",
            len(messages),
            type(exc).__name__,
            exc,
        )
        return False


class Publisher:
    """Queues events on the server's event loop and sends them in batches."""

    BATCH = 2000

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: collections.deque[Event] = collections.deque()
        self.wakeup = asyncio.Event()
        self.sending = False
        self.task = loop.create_task(self._run())
        self.dropped = 0

    def usable(self) -> bool:
        return self.loop.is_running() and not self.loop.is_closed() and not self.task.done()

    def submit_threadsafe(self, events: list[Event]) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.submit(events)
        else:
            self.loop.call_soon_threadsafe(self.submit, events)

    def submit(self, events: Iterable[Event]) -> None:
        self.queue.extend(events)
        overflow = len(self.queue) - realtime_setting("MAX_PENDING_EVENTS")
        if overflow > 0:
            for _ in range(overflow):
                self.queue.popleft()
            self.dropped += overflow
            logger.warning("fan-out: queue full, dropped %d oldest event(s); clients will catch up", overflow)
        self.wakeup.set()

    async def _run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                n = min(len(self.queue), self.BATCH)
                batch = [self.queue.popleft() for _ in range(n)]
                self.sending = True
                try:
                    await send_now(batch)
                finally:
                    self.sending = False

    async def drain(self) -> None:
        """Wait until everything queued so far has been handed to the layer (tests, shutdown)."""
        # A popped batch is not sent yet: wait for the send in flight too.
        while (self.queue or self.sending) and not self.task.done():
            await asyncio.sleep(0.005)


_publisher: Publisher | None = None
_publisher_lock = threading.Lock()


def current() -> Publisher | None:
    """The publisher bound to a server loop, if any."""
    return _publisher


def bind_loop() -> None:
    """Called from the running server loop (asgi.py): send events from this loop from now on."""
    global _publisher
    loop = asyncio.get_running_loop()
    if _publisher is not None and _publisher.loop is loop and not _publisher.task.done():
        return
    with _publisher_lock:
        if _publisher is None or _publisher.loop is not loop or _publisher.task.done():
            _publisher = Publisher(loop)


def unbind_loop() -> None:
    global _publisher
    with _publisher_lock:
        if _publisher is not None:
            _publisher.task.cancel()
        _publisher = None


async def drain() -> None:
    if _publisher is not None:
        await _publisher.drain()
