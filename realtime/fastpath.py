"""
The consumer's fast path: how messages reach a socket's handlers without a task wake-up apiece.

Written against channels 4.3.x (checked with 4.3.2): ``FastPathConsumerMixin`` replaces
``channels.consumer.AsyncConsumer.__call__`` (its ``await_many_dispatch`` loop) and
``AsyncConsumer.dispatch``, and reads the consumer's attributes that ``AsyncConsumer.__call__`` sets
(``scope``, ``base_send``, ``channel_layer``, ``channel_name``). A channels release that changes
either method must be re-read against this module. The layer side is
``realtime.layers.BatchingRedisChannelLayer.attach``.
"""

from __future__ import annotations

import asyncio
from functools import partial

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer

from . import protocol
from .layers.queues import SocketQueue


async def _forward(receive, inbox: SocketQueue) -> None:
    """Put what ``receive`` returns into ``inbox``, forever; a failure is put there too, last."""
    try:
        while True:
            inbox.put_nowait(await receive())
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        inbox.put_nowait(exc)


class Later:
    """Work the consumer queued for itself (``later``): run on its task after what was queued before."""

    __slots__ = ("action",)

    def __init__(self, action) -> None:
        self.action = action


class SendInProgress:
    """A send started by ``handle_now`` that did not complete at once: the consumer's task ends it."""

    __slots__ = ("coroutine", "waiting_on")

    def __init__(self, coroutine, waiting_on) -> None:
        self.coroutine = coroutine
        self.waiting_on = waiting_on  # what it yielded: a future, or None for a bare yield

    async def finish(self) -> None:
        """Drive the coroutine to its end as a task would: resume it each time what it awaits is done."""
        coroutine, waiting_on = self.coroutine, self.waiting_on
        try:
            while True:
                if waiting_on is None:
                    await asyncio.sleep(0)
                else:
                    await asyncio.wait((waiting_on,))
                try:
                    waiting_on = coroutine.send(None)
                except StopIteration:
                    return
        except asyncio.CancelledError:
            coroutine.close()
            raise


class FastPathConsumerMixin:
    """
    A consumer's message loop without a task wake-up per message. What it replaces in channels 4.3.x
    and why:

    - ``__call__`` replaces ``AsyncConsumer.__call__``, whose ``await_many_dispatch`` costs an
      ``asyncio.wait`` and a new task per message (bench/JOURNAL.md, findings 16 and 19).
    - ``handle_now`` (offered each message by the layer's pump) sends a live event on the pump's
      turn while the consumer is idle, instead of waking its task (finding 44).
    - ``dispatch`` replaces ``AsyncConsumer.dispatch``, which hops to the thread-sensitive worker
      thread (``aclose_old_connections``) for every message.

    The consumer provides ``group`` (None until it joined its group), ``high_water`` (the catch-up's
    last id), ``replayed_upto`` (the journal step a resume replayed up to), ``closing`` and
    ``_token_expired()``.
    """

    async def __call__(self, scope, receive, send) -> None:
        """
        Channels' ``AsyncConsumer.__call__``, with one queue for both sources of messages.

        Channels waits for the next client frame and the next channel-layer message with
        ``await_many_dispatch``: an ``asyncio.wait`` and a new task for every message (14 % of the
        servers' CPU during a bulk send, bench/JOURNAL.md findings 16 and 19). Here the layer's pump
        puts this socket's messages straight into its queue (``BatchingRedisChannelLayer.attach``;
        other layers through one reader task), one long-lived task adds the client's frames, and
        this loop handles them one at a time in arrival order, as Channels does. A queued exception
        (the layer failed) is raised.
        """
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        loop = asyncio.get_running_loop()
        readers: list[asyncio.Task] = []
        attached = None
        if self.channel_layer is None:
            inbox = SocketQueue()
        else:
            self.channel_name = await self.channel_layer.new_channel()
            if hasattr(self.channel_layer, "attach"):
                attached = self.channel_name
                inbox = self.channel_layer.attach(attached, self.handle_now)
            else:
                inbox = SocketQueue()
                readers.append(loop.create_task(_forward(partial(self.channel_layer.receive, self.channel_name), inbox)))
        readers.append(loop.create_task(_forward(receive, inbox)))
        self.inbox = inbox
        try:
            while True:
                self.idle = True  # seen by handle_now only while this waits on an empty queue
                item = await inbox.get()
                self.idle = False
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, SendInProgress):
                    await item.finish()
                    continue
                if isinstance(item, Later):
                    await item.action()
                    continue
                await self.dispatch(item)
        except StopConsumer:
            pass
        finally:
            for task in readers:
                task.cancel()
            if attached is not None:
                self.channel_layer.detach(attached)

    def later(self, action) -> None:
        """Run the coroutine function ``action`` on this consumer's task once what is queued now was handled."""
        self.inbox.put_nowait(Later(action))

    def handle_now(self, event: dict) -> bool:
        """
        Handle a live event on the channel layer pump's turn of the loop instead of waking this
        consumer's task for it (bench/JOURNAL.md, finding 44: the task's wake-up, the queue and the
        dispatch were a fifth of the servers' samples in a bulk send). Only while the consumer
        waits for work with nothing queued, so events keep their order and none passes a catch-up
        in progress; only events whose handling is a check and their frame. Returns False to have
        the event queued and handled by the task as before. Never raises: a failure of the send is
        queued for the task to raise, as its own send would have.
        """
        state = self.__dict__
        try:
            if (
                not state.get("idle")
                or not state.get("group")  # not connected yet: connect() has not joined its group
                or state.get("closing")
                or self.inbox.qsize()
                or "frame" not in event
                or self._token_expired()
            ):
                return False
            kind = event.get("type")
            if kind == protocol.NOTIFICATION_CREATED:
                if event["id"] <= self.high_water and not event.get("resend"):
                    return True  # already sent by the catch-up
            elif kind not in (
                protocol.NOTIFICATION_READ, protocol.NOTIFICATION_DELETED, protocol.NOTIFICATION_UPDATED,
                protocol.NOTIFICATION_SEEN, protocol.NOTIFICATION_ARCHIVED, protocol.NOTIFICATION_UNARCHIVED,
                protocol.NOTIFICATION_INTERACTED,
            ):
                return False
            elif 0 < event.get("seq", 0) <= self.replayed_upto:
                return True  # the replay of a resume sent this change already
        except Exception:
            return False  # the task handles it, and raises what it raises there
        sending = self.base_send({"type": "websocket.send", "text": event["frame"]})
        if not asyncio.iscoroutine(sending):
            # A server whose send is another kind of awaitable (granian's future): the task awaits it, in order.
            self.inbox.put_nowait(Later(lambda: sending))
            return True
        try:
            waiting_on = sending.send(None)
        except StopIteration:
            return True  # sent (daphne's send completes at once)
        except BaseException as exc:
            self.inbox.put_nowait(exc)
            return True
        # The server's send waits for something: the task finishes it before anything queued after.
        self.inbox.put_nowait(SendInProgress(sending, waiting_on))
        return True

    async def dispatch(self, message):
        """
        Call the handler of ``message`` directly. Channels' AsyncConsumer.dispatch first runs
        ``close_old_connections`` through ``sync_to_async`` for every message: a hop to the one
        thread-sensitive worker thread per frame pushed, which serialized every socket's frames of
        a process behind that thread. Events from the channel layer touch no database here, and
        every database call of this consumer goes through ``database_sync_to_async``, which
        closes stale connections itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
