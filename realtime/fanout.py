"""
Fan-out: the one module that talks to the channel layer.

It owns group names, event payloads and sending. Services call it from
``transaction.on_commit(..., robust=True)`` only, so nothing is pushed before its row is committed.
The database is the record of truth: an event that cannot be sent (Redis down or hanging) is
logged and dropped, and the client gets the notification by catch-up.

How an event leaves the process:
- In a server process (daphne), ``bind_loop()`` records the server's event loop. A publish from a
  request thread hands the events to that loop and returns at once; a background task sends
  everything queued in one pipelined call per batch (``group_send_many``), with a timeout.
- Elsewhere (management commands, the shell, WSGI) there is no server loop, so the events are sent
  synchronously, with the same timeout.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from .layers import wait_reply

logger = logging.getLogger(__name__)

Event = tuple[int, dict[str, Any]]  # (user id, channel-layer message)

# Event types: dotted noun + past-tense verb; the consumer has one handler per type.
NOTIFICATION_CREATED = "notification.created"
NOTIFICATION_READ = "notification.read"
NOTIFICATION_DELETED = "notification.deleted"


def group_for_user(user_id: int) -> str:
    """The channel-layer group of every open socket of one user."""
    return f"inbox.user.{int(user_id)}"


# --- Events ---------------------------------------------------------------------------------------
#
# Each event carries the WebSocket frame its sockets send, rendered here once: the consumer checks
# what it must (``id``, ``resend``) and sends ``frame`` as it is. A bulk send's frames are one JSON
# text with each recipient's id, user and unread count put in, not a payload dict per recipient
# that every server process unpacked and every socket serialized again (bench/README.md, finding 42).


def _frame(fields: dict[str, Any]) -> str:
    return orjson.dumps(fields).decode()


def created_event(payload: dict[str, Any], unread: int, *, resend: bool = False) -> dict[str, Any]:
    """
    The channel-layer message of one new notification for its recipient. ``resend`` marks a
    deliberate push of a stored notification (admin): sockets deliver it even when their catch-up
    already covered the id, where a late live event would be a duplicate.
    """
    message = {
        "type": NOTIFICATION_CREATED,
        "id": payload["id"],
        "frame": _frame({"type": NOTIFICATION_CREATED, "notification": payload, "unread": unread}),
    }
    if resend:
        message["resend"] = True
    return message


def notifications_created(notifications: Sequence, *, unread: dict[int, int], resend: bool = False) -> int:
    """
    Push stored notifications (a row saved one by one, an admin resend) to their recipients, one
    event each. Expired ones are skipped. A send uses ``notification_sent``.
    """
    from inbox.payloads import notification_payload

    events: list[Event] = []
    for n in notifications:
        if n.is_expired():
            continue
        payload = notification_payload(n)
        events.append((n.recipient_id, created_event(payload, unread.get(n.recipient_id, 0), resend=resend)))
    publish(events)
    return len(events)


def notification_sent(
    template, *, ids: Sequence[int], recipient_ids: Sequence[int], unread: dict[int, int], sender_username: str | None
) -> int:
    """
    Push one send (services.notification_create): the same ``template`` stored as ``ids[i]`` for
    ``recipient_ids[i]``. The frames are those of ``created_event``, byte for byte; the fields they
    share are rendered once.
    """
    from inbox.payloads import notification_payload

    if template.is_expired():
        return 0
    payload = notification_payload(template, sender_username=sender_username)
    shared = _frame({k: v for k, v in payload.items() if k not in ("id", "recipient")})[1:-1]
    head = '{"type":"%s","notification":{"id":' % NOTIFICATION_CREATED
    events: list[Event] = [
        (rid, {"type": NOTIFICATION_CREATED, "id": nid, "frame": f'{head}{nid},"recipient":{rid},{shared}}},"unread":{unread.get(rid, 0)}}}'})
        for nid, rid in zip(ids, recipient_ids)
    ]
    publish(events)
    return len(events)


def notifications_read(*, user_id: int, ids: list[int], read: bool, unread: int) -> int:
    publish([(user_id, {"type": NOTIFICATION_READ, "frame": _frame({"type": NOTIFICATION_READ, "ids": ids, "read": read, "unread": unread})})])
    return 1


def notifications_deleted(*, user_id: int, ids: list[int], unread: int) -> int:
    publish([(user_id, {"type": NOTIFICATION_DELETED, "frame": _frame({"type": NOTIFICATION_DELETED, "ids": ids, "unread": unread})})])
    return 1


# --- Sending ----------------------------------------------------------------------------------


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
    timeout = settings.REALTIME["SEND_TIMEOUT"]
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


class _Publisher:
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
        overflow = len(self.queue) - settings.REALTIME["MAX_PENDING_EVENTS"]
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


_publisher: _Publisher | None = None
_publisher_lock = threading.Lock()


def bind_loop() -> None:
    """Called from the running server loop (asgi.py): send events from this loop from now on."""
    global _publisher
    loop = asyncio.get_running_loop()
    if _publisher is not None and _publisher.loop is loop and not _publisher.task.done():
        return
    with _publisher_lock:
        if _publisher is None or _publisher.loop is not loop or _publisher.task.done():
            _publisher = _Publisher(loop)


def unbind_loop() -> None:
    global _publisher
    with _publisher_lock:
        if _publisher is not None:
            _publisher.task.cancel()
        _publisher = None


async def drain() -> None:
    if _publisher is not None:
        await _publisher.drain()
