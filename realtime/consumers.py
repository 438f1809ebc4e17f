"""
The WebSocket consumer: one instance per open socket.

On connect it authenticates (realtime.auth), joins the user's group *first*, then sends what the
client missed from the database (catch-up) followed by ``sync.done``. Live events that arrive
meanwhile wait in the channel and are handled after; any with an id the catch-up already sent are
skipped, so the client sees each notification once.

Frames and close codes are realtime.protocol's; how messages reach the handlers is
realtime.fastpath's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qs

import orjson
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import InterfaceError, OperationalError

from inbox import selectors, services
from inbox.conf import inbox_setting
from inbox.payloads import notification_payload
from inbox.store import connect, journal, unread

from . import admission, protocol, publisher, watchdog
from .auth import BEARER, DATABASE_UNAVAILABLE, still_valid
from .conf import realtime_setting
from .fastpath import FastPathConsumerMixin
from .layers.membership import join_counting, leave
from .layers.replies import wait_reply
from .protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_LAYER_FAILED,
    CLOSE_RATE_LIMITED,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY_SOCKETS,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHORIZED,
    FrameError,
    parse_id,
    parse_ids,
)

logger = logging.getLogger(__name__)


class NotificationConsumer(FastPathConsumerMixin, AsyncJsonWebsocketConsumer):
    """Pushes a user's notifications to one socket and takes acks, reads and syncs from it."""

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
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

    async def _close_after_failure(self, send, code: int, what: str, exc: BaseException) -> None:
        logger.warning("socket closed: %s (%s: %s)", what, type(exc).__name__, exc)
        await self._cancel_tasks()
        try:
            await send({"type": "websocket.close", "code": code})
        except Exception:
            pass  # the socket is already gone

    # --- Connection lifecycle -------------------------------------------------------------------

    async def connect(self) -> None:
        try:
            await self._connect()
        finally:
            admission.end_turn(self.scope)  # the next socket's turn (realtime/admission.py)

    async def _connect(self) -> None:
        self.user = self.scope.get("user")
        self.token_exp = self.scope.get("token_exp")
        self.group = None
        self.high_water = 0
        # The journal step a resume (``since``) replayed up to: live events at or below it were in the replay.
        self.replayed_upto = 0
        # Timers, not sleeping tasks: a pending TimerHandle costs ~0.2 KB per socket, a task ~1.5 KB.
        self.timers: list[asyncio.TimerHandle] = []
        self.tasks: set[asyncio.Task] = set()
        self.bucket = float(realtime_setting("FRAME_BURST"))
        self.bucket_at = time.monotonic()
        self.refused = 0
        self.sync_after = None  # the cursor of a sync waiting its turn (on_sync)
        self.sync_since = None  # the same for a sync by journal step
        publisher.bind_loop()

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
            after, since = self._cursor_from_query()
        except FrameError as exc:
            await self.accept(subprotocol)
            await self.send_text(protocol.error_frame(exc.code, exc.detail))
            await self.close(code=CLOSE_BAD_REQUEST)
            return

        await self.accept(subprotocol)
        group = publisher.group_for_user(self.user.pk)
        # A live socket re-joins every GROUP_REFRESH_SECONDS: older members are gone sockets.
        fresh_within = realtime_setting("GROUP_REFRESH_SECONDS") + 60
        try:
            sockets = await wait_reply(  # bounded by Redis' time, not by a busy loop's
                join_counting(self.channel_layer, group, self.channel_name, fresh_within=fresh_within),
                realtime_setting("SEND_TIMEOUT"),
            )
        except Exception as exc:
            logger.warning("socket closed: could not join its group (%s: %s)", type(exc).__name__, exc)
            await self.close(code=CLOSE_LAYER_FAILED)
            return
        cap = realtime_setting("MAX_SOCKETS_PER_USER")
        if cap and sockets is not None and sockets > cap:
            # Counted by the layer across server processes, this socket included: leave again.
            try:
                await leave(self.channel_layer, group, self.channel_name)
            except Exception:
                pass  # the membership expires by itself
            logger.info("socket closed: user %s has %d sockets open (cap %d)", self.user.pk, sockets - 1, cap)
            await self.send_text(protocol.error_frame("too_many_sockets", f"At most {cap} open sockets per user."))
            await self.close(code=CLOSE_TOO_MANY_SOCKETS)
            return
        self.group = group
        watchdog.register(self)  # closed with 1012 if Redis fails or forgets the group
        # One statement: the user and token checked again, and what the catch-up (or the replay) starts from.
        first = await self._snapshot(after, since)
        if not still_valid(self.scope, first):
            # Deactivated or revoked moments ago (on another process, or between the check at
            # connect and the join): the database says so now, and later events reach the group.
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        if self.token_exp is not None:
            self._call_later(self.token_exp - time.time(), self._close_for_expired_token)
        self._call_later(realtime_setting("GROUP_REFRESH_SECONDS"), self._refresh_group_membership)
        if since is not None:
            if not await self.replay(since, first):
                await self.close(code=CLOSE_BAD_REQUEST)
            return
        await self.catch_up(after, first)

    async def websocket_disconnect(self, message) -> None:
        """
        Channels' ``AsyncWebsocketConsumer.websocket_disconnect`` (4.3.x) without its ``aclose_old_connections()``:
        a hop to the one thread-sensitive worker thread for every socket that closes, in a row for 10,000 of them
        when the server stops (bench/JOURNAL.md, finding 80). Every database call of this consumer goes through
        ``database_sync_to_async``, which closes stale connections itself (as ``FastPathConsumerMixin.dispatch``
        says), and ``groups`` is empty: the consumer joins and leaves its group itself.
        """
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code) -> None:
        watchdog.unregister(self)
        await self._cancel_tasks()
        if self.__dict__.get("group"):
            try:
                # Batched and bounded by Redis' time: on a server's stop every socket leaves at once
                # (realtime/layers/membership.py).
                await leave(self.channel_layer, self.group, self.channel_name)
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

    def _cursor_from_query(self) -> tuple[int | None, int | None]:
        """``?after=<id>`` (new rows after it) and ``?since=<seq>`` (every change after it; wins over ``after``)."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        after = protocol.parse_after_param(query["after"][0]) if "after" in query else None
        since = protocol.parse_after_param(query["since"][0], "since") if "since" in query else None
        return after, since

    async def _close_for_expired_token(self) -> None:
        await self.close(code=CLOSE_UNAUTHORIZED)

    async def _refresh_group_membership(self) -> None:
        # channels-redis drops group members older than group_expiry: re-join well before that.
        try:
            await asyncio.wait_for(self.channel_layer.group_add(self.group, self.channel_name), realtime_setting("SEND_TIMEOUT"))
        except Exception as exc:
            logger.warning("socket closed: could not refresh its group (%s: %s)", type(exc).__name__, exc)
            await self.close(code=CLOSE_SERVICE_RESTART)
            return
        self._call_later(realtime_setting("GROUP_REFRESH_SECONDS"), self._refresh_group_membership)

    def _token_expired(self) -> bool:
        return self.token_exp is not None and time.time() >= self.token_exp

    # --- Catch-up -------------------------------------------------------------------------------

    async def catch_up(self, after: int | None, first: connect.Snapshot | None = None) -> None:
        """
        Send what the client missed, oldest first, then ``sync.done``: every notification after
        ``after``, or without it the pending ones. At most INBOX['CATCHUP_MAX'] per sync; ``more``
        tells the client to sync again from ``last_id``. ``first``: the snapshot the connect read
        (its first page read for this ``after``); without it, one is read here.
        """
        batch = inbox_setting("CATCHUP_BATCH")
        cap = inbox_setting("CATCHUP_MAX")
        pending = after is None
        if first is None:
            first = await self._snapshot(after, None)
        unread, newest, seq = first.unread, first.newest, first.top
        rows = first.payloads
        # Pending mode: everything up to the newest id is accounted for (sent now, or delivered
        # before), so the client resumes from there next time.
        upto = newest if pending else None
        cursor, last_id, sent, more = after, (newest if pending else after), 0, False
        while True:
            limit = min(batch, cap - sent)
            if rows is None:
                rows = await self._catchup_rows(cursor, limit, pending, upto)
            for payload in rows:
                await self.send_text(protocol.catchup_frame(payload, unread))
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
            rows = None
        self.high_water = max(self.high_water, last_id)
        if sent:
            unread = await self._unread_count()
        # ``seq``: the journal step read with the first page; a client that loaded its list before
        # connecting resumes from it with ``since`` (docs/feed.md, "The change journal").
        await self.send_text(protocol.sync_done_frame(last_id=last_id, unread=unread, more=more, seq=seq))

    # --- Resume by journal step (issue 21; docs/feed.md, "The change journal") -------------------

    async def replay(self, since: int, first: connect.Snapshot | None = None) -> bool:
        """
        Send every change of the user after journal step ``since``, in journal order, each once
        (a row as it is now, a removed row's tombstone), then ``sync.done`` with the step it
        reached in ``seq``. Pages of INBOX['CATCHUP_BATCH']; past INBOX['CATCHUP_MAX'] it stops at
        the end of a step, with ``more``. ``since`` below the journal's floor: ``sync.reset``.
        ``since`` beyond the user's journal: an error frame ``invalid_since``, and False.
        ``first``: the snapshot the connect read; without it, one is read here.
        """
        batch = inbox_setting("CATCHUP_BATCH")
        cap = inbox_setting("CATCHUP_MAX")
        if first is None:
            first = await self._snapshot(None, since)
        floor, top, unread = first.floor, first.top, first.unread
        if since > top:
            exc = protocol.beyond_journal(since, top)
            await self.send_error(exc.code, exc.detail)
            return False
        if since < floor:
            await self.send_text(protocol.sync_reset_frame(seq=top, floor=floor, unread=unread))
            self.high_water = max(self.high_water, top)
            self.replayed_upto = max(self.replayed_upto, top)
            return True
        cursor, sent, more, upto = (since, None), 0, False, None
        page = ReplayPage.of(first.changes, since=since, unread=unread)  # the first page, read with the state
        while True:
            if page is None:
                page = await self._replay_page(since, cursor, batch, upto, unread)
            for frame in page.frames:
                await self.send_text(frame)
            sent += page.count
            if page.count:
                cursor = page.last
            if page.count < batch:
                if upto is not None:
                    more = await self._replay_has_more(cursor)
                break
            if sent >= cap and upto is None:
                upto = cursor[0]  # finish this step (one step may span pages), then stop
            page = None
        done = cursor[0] if upto is not None else max(top, cursor[0])
        self.high_water = max(self.high_water, done)
        self.replayed_upto = max(self.replayed_upto, done)
        if sent:
            unread = await self._unread_count()
        await self.send_text(protocol.sync_done_frame(last_id=done, unread=unread, more=more, seq=done))
        return True

    @database_sync_to_async
    def _snapshot(self, after: int | None, since: int | None) -> connect.Snapshot:
        """
        The user's state and the first page of a replay after journal step ``since`` or, without
        it, of a catch-up after id ``after`` (the pending rows without either): the page
        ``replay`` and ``catch_up`` would read first.
        """
        batch = inbox_setting("CATCHUP_BATCH")
        if since is not None:
            return connect.snapshot(self.user.pk, page=connect.JOURNAL, since=since, limit=batch)
        limit = min(batch, inbox_setting("CATCHUP_MAX"))
        if after is None:
            return connect.snapshot(self.user.pk, page=connect.PENDING, limit=limit)
        return connect.snapshot(self.user.pk, page=connect.AFTER, after=after, limit=limit)

    @database_sync_to_async
    def _unread_count(self) -> int:
        return unread.count(self.user.pk)

    @database_sync_to_async
    def _replay_page(self, since, cursor, limit, upto, unread) -> "ReplayPage":
        changes = journal.changes(self.user.pk, since=cursor[0], after_id=cursor[1], limit=limit, upto=upto)
        return ReplayPage.of(changes, since=since, unread=unread)

    @database_sync_to_async
    def _replay_has_more(self, cursor) -> bool:
        return bool(journal.changes(self.user.pk, since=cursor[0], after_id=cursor[1], limit=1))

    @database_sync_to_async
    def _catchup_rows(self, after, limit, pending, upto) -> list[dict]:
        rows = selectors.notification_catchup(user_id=self.user.pk, after=after, limit=limit, pending=pending, upto=upto)
        return [notification_payload(n) for n in rows]

    @database_sync_to_async
    def _has_more(self, after, pending, upto) -> bool:
        return bool(selectors.notification_catchup(user_id=self.user.pk, after=after, limit=1, pending=pending, upto=upto))

    # --- Frames from the client -----------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        limit = realtime_setting("MAX_FRAME_BYTES")
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
            if self.refused >= realtime_setting("FRAME_ABUSE_CLOSE"):
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
            protocol.ACK: self.on_ack,
            protocol.READ: self.on_read,
            protocol.READ_ALL: self.on_read_all,
            protocol.SYNC: self.on_sync,
            protocol.PING: self.on_ping,
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
        category = protocol.parse_category(content)
        await database_sync_to_async(services.notification_mark_all_read)(user=self.user, category=category)

    async def on_sync(self, content) -> None:
        """
        ``{"type": "sync", "since": N}`` replays the journal after N (``replay``); ``{"type":
        "sync", "after": N}`` catches up the rows after id N, as before.

        Queue a catch-up behind what is queued now. Syncs that arrive before it runs are answered
        by the same one (from the smallest ``after``) and its one ``sync.done``: a client that
        repeats ``sync`` while a catch-up is in flight costs one catch-up, not one each.
        """
        if "since" in content:
            since = parse_id(content.get("since"), "since")
            if self.sync_since is not None:
                self.sync_since = min(self.sync_since, since)
                return
            self.sync_since = since
            self.later(self._replay_now)
            return
        after = parse_id(content.get("after"))
        waiting = self.sync_after
        if waiting is not None:
            self.sync_after = min(waiting, after)
            return
        self.sync_after = after
        self.later(self._sync_now)

    async def _sync_now(self) -> None:
        after, self.sync_after = self.sync_after, None
        if after is not None:
            await self.catch_up(after)

    async def _replay_now(self) -> None:
        since, self.sync_since = self.sync_since, None
        if since is not None:
            await self.replay(since)

    async def on_ping(self, content) -> None:
        await self.send_text(protocol.pong_frame())

    def _take_token(self) -> bool:
        now = time.monotonic()
        rate, burst = realtime_setting("FRAME_RATE"), realtime_setting("FRAME_BURST")
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
            event = protocol.with_frame(event)
        if event["id"] <= self.high_water and not event.get("resend"):
            return  # already sent by the catch-up
        await self.send_text(event["frame"])

    async def notification_read(self, event) -> None:
        """Read state changed, or notifications were deleted, elsewhere: the frame as rendered."""
        if self._token_expired():
            await self.close(code=CLOSE_UNAUTHORIZED)
            return
        if 0 < event.get("seq", 0) <= self.replayed_upto:
            return  # the replay of a resume sent this change already (the row as it is now)
        await self.send_text(event["frame"] if "frame" in event else protocol.with_frame(event)["frame"])

    notification_deleted = notification_read
    # An edited notification (realtime.protocol.updated_message): every socket sends it, whatever its catch-up sent.
    notification_updated = notification_read
    # The feed's states (issue 21): frames as rendered, skipped when the replay of a resume sent them.
    notification_seen = notification_archived = notification_unarchived = notification_interacted = notification_read

    async def credentials_revoked(self, event) -> None:
        """The user's tokens were revoked (password changed, deactivated, deleted): the error frame, then 4401."""
        await self.send_text(event["frame"])
        await self.close(code=CLOSE_UNAUTHORIZED)

    # --- Sending --------------------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        """Send one frame's JSON text (rendered by realtime.protocol)."""
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
        await self.send_text(protocol.error_frame(code, detail))


class ReplayPage:
    """One page of a replay, rendered: its frames, how many changes, and the (seq, id) of the last."""

    __slots__ = ("frames", "count", "last")

    def __init__(self, frames: list[str], count: int, last: tuple[int, int]) -> None:
        self.frames, self.count, self.last = frames, count, last

    @classmethod
    def of(cls, changes: list, *, since: int, unread: int) -> "ReplayPage":
        frames: list[str] = []
        gone: list[int] = []
        gone_key = None
        for change in changes:
            if change.notification is None and gone_key == (change.seq, change.reason):
                gone.append(change.id)
                continue
            if gone:
                frames.append(protocol.replay_deleted_frame(ids=gone, seq=gone_key[0], reason=gone_key[1], unread=unread))
                gone, gone_key = [], None
            if change.notification is None:
                gone, gone_key = [change.id], (change.seq, change.reason)
            else:
                payload = notification_payload(change.notification)
                frames.append(protocol.replay_row_frame(payload, seq=change.seq, since=since, unread=unread))
        if gone:
            frames.append(protocol.replay_deleted_frame(ids=gone, seq=gone_key[0], reason=gone_key[1], unread=unread))
        last = (changes[-1].seq, changes[-1].id) if changes else (since, None)
        return cls(frames, len(changes), last)
