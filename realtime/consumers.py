"""
The WebSocket consumer: one instance per open socket.

On connect it authenticates (realtime.auth), joins the user's group *first*, then sends what the
client missed from the database (catch-up) followed by ``sync.done``. Live events that arrive
meanwhile wait in the channel and are handled after; any with an id the catch-up already sent are
skipped, so the client sees each notification once.

Close codes: 4401 unauthenticated or token expired (refresh and reconnect), 4400 bad connect
parameters, 4429 too many refused frames, 1009 frame too large, 1011/1012 the channel layer failed
(reconnect and catch up).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from urllib.parse import parse_qs

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import InterfaceError, OperationalError

from inbox import selectors, services
from inbox.payloads import notification_payload

from . import fanout, watchdog
from .auth import BEARER, DATABASE_UNAVAILABLE

logger = logging.getLogger(__name__)

MAX_ID = 2**63 - 1

CLOSE_UNAUTHORIZED = 4401
CLOSE_BAD_REQUEST = 4400
CLOSE_RATE_LIMITED = 4429
CLOSE_TOO_BIG = 1009
CLOSE_LAYER_FAILED = 1011
CLOSE_SERVICE_RESTART = 1012
CLOSE_TRY_AGAIN_LATER = 1013  # the database is unavailable


class FrameError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse_id(value, field: str = "after") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise FrameError(f"invalid_{field}", f"'{field}' must be an integer between 0 and {MAX_ID}.")
    return value


def parse_ids(content: dict) -> list[int]:
    ids = content.get("ids")
    limit = settings.INBOX["MAX_IDS_PER_REQUEST"]
    if not isinstance(ids, list) or not ids:
        raise FrameError("invalid_ids", "'ids' must be a non-empty list of notification ids.")
    if len(ids) > limit:
        raise FrameError("too_many_ids", f"At most {limit} ids per frame.")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= MAX_ID:
            raise FrameError("invalid_ids", "'ids' must contain positive integer ids only.")
    return sorted(set(ids))


async def _forward(receive, inbox: asyncio.Queue) -> None:
    """Put what ``receive`` returns into ``inbox``, forever; a failure is put there too, last."""
    try:
        while True:
            inbox.put_nowait(await receive())
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        inbox.put_nowait(exc)


class _SendInProgress:
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


def _with_frame(event: dict) -> dict:
    """
    An event of a server process of an earlier version (a rolling restart), which sent the frame's
    fields instead of the frame: rendered here, as that version's consumer did.
    """
    fields = {k: v for k, v in event.items() if k not in ("resend", "__asgi_channel__")}
    message = {"frame": orjson.dumps(fields).decode(), "resend": event.get("resend", False)}
    if "notification" in event:
        message["id"] = event["notification"]["id"]
    return message


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    """Pushes a user's notifications to one socket and takes acks, reads and syncs from it."""

    async def __call__(self, scope, receive, send):
        try:
            await self._serve(scope, receive, send)
        except (OperationalError, InterfaceError) as exc:
            # PostgreSQL went away under this socket (catch-up, ack, read): 1013, try again later.
            await self._close_after_failure(send, CLOSE_TRY_AGAIN_LATER, "database unavailable", exc)
        except Exception as exc:
            # The channel layer (Redis) failed under this socket: close it so the client reconnects
            # and catches up, instead of staying open and deaf. redis-py's errors are OSError /
            # ConnectionError subclasses or live in the redis package.
            if isinstance(exc, (OSError, asyncio.TimeoutError, ConnectionError)) or type(exc).__module__.startswith("redis"):
                await self._close_after_failure(send, CLOSE_SERVICE_RESTART, "channel layer failed", exc)
            else:
                raise

    async def _serve(self, scope, receive, send) -> None:
        """
        Channels' ``AsyncConsumer.__call__``, with one queue for both sources of messages.

        Channels waits for the next client frame and the next channel-layer message with
        ``await_many_dispatch``: an ``asyncio.wait`` and a new task for every message (bench/: 14 %
        of the servers' CPU during a bulk send). Here the layer's pump puts this socket's messages
        straight into its queue (``BatchingRedisChannelLayer.attach``; other layers through one
        reader task), one long-lived task adds the client's frames, and this loop handles them one
        at a time in arrival order, as Channels does. A queued exception (the layer failed) is raised.
        """
        self.scope = scope
        self.base_send = send
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        loop = asyncio.get_running_loop()
        readers: list[asyncio.Task] = []
        attached = None
        if self.channel_layer is None:
            inbox: asyncio.Queue = asyncio.Queue()
        else:
            self.channel_name = await self.channel_layer.new_channel()
            if hasattr(self.channel_layer, "attach"):
                attached = self.channel_name
                inbox = self.channel_layer.attach(attached, self.handle_now)
            else:
                inbox = asyncio.Queue()
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
                if isinstance(item, _SendInProgress):
                    await item.finish()
                    continue
                await self.dispatch(item)
        except StopConsumer:
            pass
        finally:
            for task in readers:
                task.cancel()
            if attached is not None:
                self.channel_layer.detach(attached)

    def handle_now(self, event: dict) -> bool:
        """
        Handle a live event on the channel layer pump's turn of the loop instead of waking this
        consumer's task for it (bench/README.md, finding 44: the task's wake-up, the queue and the
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
            if kind == fanout.NOTIFICATION_CREATED:
                if event["id"] <= self.high_water and not event.get("resend"):
                    return True  # already sent by the catch-up
            elif kind not in (fanout.NOTIFICATION_READ, fanout.NOTIFICATION_DELETED):
                return False
        except Exception:
            return False  # the task handles it, and raises what it raises there
        sending = self.base_send({"type": "websocket.send", "text": event["frame"]})
        try:
            waiting_on = sending.send(None)
        except StopIteration:
            return True  # sent (daphne's send completes at once)
        except BaseException as exc:
            self.inbox.put_nowait(exc)
            return True
        # The server's send waits for something: the task finishes it before anything queued after.
        self.inbox.put_nowait(_SendInProgress(sending, waiting_on))
        return True

    async def _close_after_failure(self, send, code: int, what: str, exc: BaseException) -> None:
        logger.warning("socket closed: %s (%s: %s)", what, type(exc).__name__, exc)
        await self._cancel_tasks()
        try:
            await send({"type": "websocket.close", "code": code})
        except Exception:
            pass  # the socket is already gone

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

    # --- Connection lifecycle -------------------------------------------------------------------

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.token_exp = self.scope.get("token_exp")
        self.group = None
        self.high_water = 0
        # Timers, not sleeping tasks: a pending TimerHandle costs ~0.2 KB per socket, a task ~1.5 KB.
        self.timers: list[asyncio.TimerHandle] = []
        self.tasks: set[asyncio.Task] = set()
        self.bucket = float(settings.REALTIME["FRAME_BURST"])
        self.bucket_at = time.monotonic()
        self.refused = 0
        fanout.bind_loop()

        subprotocols = self.scope.get("subprotocols") or []
        subprotocol = BEARER if subprotocols[:1] == [BEARER] else None

        if self.scope.get("auth_error") == DATABASE_UNAVAILABLE:
            await self.accept(subprotocol)
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            return

        if self.scope.get("auth_error") or self.user is None or not self.user.is_authenticated:
            # Accept, then close: a close before accept becomes an HTTP 403 and loses the code.
            await self.accept(subprotocol)
            await self.close(code=CLOSE_UNAUTHORIZED)
            return

        try:
            after = self._after_from_query()
        except FrameError as exc:
            await self.accept(subprotocol)
            await self.send_frame({"type": "error", "code": exc.code, "detail": exc.detail})
            await self.close(code=CLOSE_BAD_REQUEST)
            return

        await self.accept(subprotocol)
        group = fanout.group_for_user(self.user.pk)
        try:
            await asyncio.wait_for(self.channel_layer.group_add(group, self.channel_name), settings.REALTIME["SEND_TIMEOUT"])
        except Exception as exc:
            logger.warning("socket closed: could not join its group (%s: %s)", type(exc).__name__, exc)
            await self.close(code=CLOSE_LAYER_FAILED)
            return
        self.group = group
        watchdog.register(self)  # closed with 1012 if Redis fails or forgets the group
        if self.token_exp is not None:
            self._call_later(self.token_exp - time.time(), self._close_for_expired_token)
        self._call_later(settings.REALTIME["GROUP_REFRESH_SECONDS"], self._refresh_group_membership)
        await self.catch_up(after)

    async def disconnect(self, code) -> None:
        watchdog.unregister(self)
        await self._cancel_tasks()
        if self.__dict__.get("group"):
            try:
                await asyncio.wait_for(self.channel_layer.group_discard(self.group, self.channel_name), 1.0)
            except Exception:
                pass  # the membership expires by itself

    async def _cancel_tasks(self) -> None:
        for timer in self.__dict__.get("timers", []):
            timer.cancel()
        for task in list(self.__dict__.get("tasks", [])):
            task.cancel()

    def _call_later(self, delay: float, action) -> None:
        """Run the coroutine function ``action`` in ``delay`` seconds, unless the socket closes first."""
        self.timers = [t for t in self.timers if not t.cancelled() and t.when() > asyncio.get_running_loop().time()]
        self.timers.append(asyncio.get_running_loop().call_later(max(0.0, delay), self._start, action))

    def _start(self, action) -> None:
        task = asyncio.ensure_future(action())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _after_from_query(self) -> int | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        if "after" not in query:
            return None
        raw = query["after"][0]
        if not raw.isdigit() or int(raw) > MAX_ID:
            raise FrameError("invalid_after", f"'after' must be an integer between 0 and {MAX_ID}.")
        return int(raw)

    async def _close_for_expired_token(self) -> None:
        await self.close(code=CLOSE_UNAUTHORIZED)

    async def _refresh_group_membership(self) -> None:
        # channels-redis drops group members older than group_expiry: re-join well before that.
        try:
            await asyncio.wait_for(self.channel_layer.group_add(self.group, self.channel_name), settings.REALTIME["SEND_TIMEOUT"])
        except Exception as exc:
            logger.warning("socket closed: could not refresh its group (%s: %s)", type(exc).__name__, exc)
            await self.close(code=CLOSE_SERVICE_RESTART)
            return
        self._call_later(settings.REALTIME["GROUP_REFRESH_SECONDS"], self._refresh_group_membership)

    def _token_expired(self) -> bool:
        return self.token_exp is not None and time.time() >= self.token_exp

    # --- Catch-up -------------------------------------------------------------------------------

    async def catch_up(self, after: int | None) -> None:
        """
        Send what the client missed, oldest first, then ``sync.done``: every notification after
        ``after``, or without it the pending ones. At most INBOX['CATCHUP_MAX'] per sync; ``more``
        tells the client to sync again from ``last_id``.
        """
        batch = settings.INBOX["CATCHUP_BATCH"]
        cap = settings.INBOX["CATCHUP_MAX"]
        pending = after is None
        unread, newest = await self._catchup_state()
        # Pending mode: everything up to the newest id is accounted for (sent now, or delivered
        # before), so the client resumes from there next time.
        upto = newest if pending else None
        cursor, last_id, sent, more = after, (newest if pending else after), 0, False
        while True:
            limit = min(batch, cap - sent)
            rows = await self._catchup_rows(cursor, limit, pending, upto)
            for payload in rows:
                await self.send_frame({"type": fanout.NOTIFICATION_CREATED, "notification": payload, "unread": unread, "catchup": True})
            sent += len(rows)
            if rows:
                cursor = rows[-1]["id"]
                last_id = max(last_id, cursor)
            if len(rows) < limit:
                break
            if sent >= cap:
                more = await self._has_more(cursor, pending, upto)
                if more and pending:
                    last_id = cursor
                break
        self.high_water = max(self.high_water, last_id)
        if sent:
            unread, _ = await self._catchup_state()
        await self.send_frame({"type": "sync.done", "last_id": last_id, "unread": unread, "more": more})

    @database_sync_to_async
    def _catchup_state(self) -> tuple[int, int]:
        return (
            selectors.notification_unread_count(user_id=self.user.pk),
            selectors.notification_newest_id(user_id=self.user.pk),
        )

    @database_sync_to_async
    def _catchup_rows(self, after, limit, pending, upto) -> list[dict]:
        rows = selectors.notification_catchup(user_id=self.user.pk, after=after, limit=limit, pending=pending, upto=upto)
        return [notification_payload(n) for n in rows]

    @database_sync_to_async
    def _has_more(self, after, pending, upto) -> bool:
        return bool(selectors.notification_catchup(user_id=self.user.pk, after=after, limit=1, pending=pending, upto=upto))

    # --- Frames from the client -----------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        limit = settings.REALTIME["MAX_FRAME_BYTES"]
        size = len(text_data) if text_data is not None else len(bytes_data or b"")
        if text_data is not None and limit // 4 < size <= limit:
            # The limit is in bytes and a character takes up to 4 in UTF-8.
            size = len(text_data.encode("utf-8", "surrogatepass"))
        if size > limit:
            await self.close(code=CLOSE_TOO_BIG)
            return
        # Every frame, binary ones included, spends a token: a flood of any kind ends in 4429.
        if not self._take_token():
            self.refused += 1
            if self.refused >= settings.REALTIME["FRAME_ABUSE_CLOSE"]:
                await self.close(code=CLOSE_RATE_LIMITED)
            else:
                await self.send_error("rate_limited", "Too many frames; slow down.")
            return
        self.refused = 0
        if text_data is None:
            await self.send_error("binary_not_supported", "Send JSON text frames.")
            return
        try:
            content = orjson.loads(text_data)
        except orjson.JSONDecodeError:
            await self.send_error("invalid_json", "The frame is not valid JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self.send_error("invalid_frame", "A frame is a JSON object with a string 'type'.")
            return
        handler = {
            "ack": self.on_ack,
            "read": self.on_read,
            "read_all": self.on_read_all,
            "sync": self.on_sync,
            "ping": self.on_ping,
        }.get(content["type"])
        if handler is None:
            await self.send_error("unknown_type", "Unknown frame type; expected ack, read, read_all, sync or ping.")
            return
        if self._token_expired():
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        try:
            await handler(content)
        except FrameError as exc:
            await self.send_error(exc.code, exc.detail)

    async def on_ack(self, content) -> None:
        await database_sync_to_async(services.notification_ack)(user=self.user, ids=parse_ids(content))

    async def on_read(self, content) -> None:
        await database_sync_to_async(services.notification_mark_read)(user=self.user, ids=parse_ids(content))

    async def on_read_all(self, content) -> None:
        category = content.get("category")
        # A NUL reached PostgreSQL, which refuses it in a string (ValueError: the consumer died with 1011).
        if category is not None and (not isinstance(category, str) or len(category) > 50 or "\x00" in category):
            raise FrameError("invalid_category", "'category' must be a string of at most 50 characters.")
        await database_sync_to_async(services.notification_mark_all_read)(user=self.user, category=category or None)

    async def on_sync(self, content) -> None:
        await self.catch_up(parse_id(content.get("after")))

    async def on_ping(self, content) -> None:
        await self.send_frame({"type": "pong"})

    def _take_token(self) -> bool:
        now = time.monotonic()
        rate, burst = settings.REALTIME["FRAME_RATE"], settings.REALTIME["FRAME_BURST"]
        self.bucket = min(burst, self.bucket + (now - self.bucket_at) * rate)
        self.bucket_at = now
        if self.bucket >= 1:
            self.bucket -= 1
            return True
        return False

    # --- Events from the channel layer (one handler per event type) -----------------------------

    async def notification_created(self, event) -> None:
        if self._token_expired():
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        if "frame" not in event:
            event = _with_frame(event)
        if event["id"] <= self.high_water and not event.get("resend"):
            return  # already sent by the catch-up
        await self.send_text(event["frame"])

    async def notification_read(self, event) -> None:
        """Read state changed, or notifications were deleted, elsewhere: the frame as rendered."""
        if self._token_expired():
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        await self.send_text(event["frame"] if "frame" in event else _with_frame(event)["frame"])

    notification_deleted = notification_read

    # --- Sending --------------------------------------------------------------------------------

    async def send_frame(self, frame: dict) -> None:
        await self.send_text(orjson.dumps(frame).decode())

    async def send_text(self, text: str) -> None:
        """Send one frame's JSON text (an event's ``frame`` is rendered by realtime.fanout)."""
        if self.__dict__.get("closing"):
            return  # nothing goes out after our close (e.g. on an expired token)
        await self.base_send({"type": "websocket.send", "text": text})

    async def close(self, code=None, reason=None) -> None:
        """Close once; later frames and closes are dropped until the server's disconnect arrives."""
        if self.__dict__.get("closing"):
            return
        self.closing = True
        await super().close(code=code, reason=reason)

    async def send_error(self, code: str, detail: str) -> None:
        await self.send_frame({"type": "error", "code": code, "detail": detail})
