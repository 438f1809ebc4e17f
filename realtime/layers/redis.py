"""
A channels-redis layer that sends to many groups in one pipelined round trip.

``RedisChannelLayer.group_send`` costs several Redis round trips per group (expire members, read
members, expire messages, run the push script). A bulk send to 10,000 users would be 40,000 round
trips. ``group_send_many`` does the same work for all groups with one script call to read the
members and one Lua call per Redis shard to push every message, keeping the layer's capacity checks
and message expiry; on a single Redis host a batch of up to ``ONE_SCRIPT_MAX`` fan-out events is one
script call for both. Every socket of one server process shares one key; a batch's messages for that
key travel in envelopes of up to ``ENVELOPE`` messages, which the process' receive pump unpacks. The
capacity applies to a key's backlog (in entries) before the batch (a key that is not being read gets
no more), never to the batch itself.

It subclasses channels-redis' RedisChannelLayer and reads some of its internals: which ones, and the
versions checked, are in realtime/layers/compat.py; the layer refuses to start outside them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
import weakref
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from . import compat
from .compat import MsgPackSerializer, RedisChannelLayer, create_pool
from .queues import SocketQueue
from .replies import wait_reply
from .scripts import ENVELOPE_KEY, MEMBERS_LUA, ONE_SCRIPT_MAX, PUSH_LUA, SEND_LUA

logger = logging.getLogger(__name__)


class BatchingRedisChannelLayer(RedisChannelLayer):
    """RedisChannelLayer with ``group_send_many`` (used by realtime.publisher)."""

    #: Messages for one process key carried by one Redis entry (see group_send_many).
    ENVELOPE = 1000

    def __init__(self, *args, **kwargs) -> None:
        compat.check_channels_redis()
        super().__init__(*args, **kwargs)
        # Every pooled connection of the layer (joins, leaves, sends) sends a command once more on a
        # new connection when it meets one Redis closed. After a Redis restart, each connection
        # pooled before it is stale: without this, every socket opened in the next moments failed
        # its first join ("Connection closed by server.") and its client paid one more reconnect,
        # 20 of 20 in the run. A host's own retry_on_error is kept.
        self.hosts = [{**host, "retry_on_error": host.get("retry_on_error", [RedisConnectionError])} for host in self.hosts]
        self._local_queues: dict[str, SocketQueue] = {}  # socket channel -> its messages
        self._pumps: dict[str, asyncio.Task] = {}  # process channel -> its receive pump
        self._touched: dict[str, float] = {}  # socket channel -> last message (monotonic)
        self._attached: set[str] = set()  # channels whose consumer reads its queue directly (attach)
        self._handlers_now: dict[str, Callable[[dict], bool]] = {}  # channel -> its consumer's handle_now
        serializer = self._serializer
        # Whether SEND_LUA can write this layer's entries at all (see fits_one_script).
        self._one_script_layer = (
            self.ring_size == 1
            and not self.channel_capacity
            and type(serializer) is MsgPackSerializer
            and serializer.crypter is None
            and serializer.random_prefix_length >= 8
        )
        self._swept = 0.0
        # The receive loop blocks in its BZPOPMIN for brpop_timeout (5 s). With a socket_timeout
        # below that, redis-py gave up on every idle pop ("Timeout reading from ...")
        # and a socket of the process was closed every socket_timeout seconds. The pop must return
        # well within it.
        timeouts = [h["socket_timeout"] for h in self.hosts if isinstance(h, dict) and h.get("socket_timeout")]
        if timeouts:
            self.brpop_timeout = max(0.1, min(self.brpop_timeout, min(timeouts) / 2))
        # The pump, the watchdog and group_send_many read through clients without redis-py's read
        # timeout and bound each reply with wait_reply() instead, which a busy loop does not trip.
        self.reply_timeout: float | None = min(timeouts) if timeouts else None
        self._patient: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> {index: client}
        self._discards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> the discards' next batch

    def patient_connection(self, index: int) -> aioredis.Redis:
        """
        A client of shard ``index`` without redis-py's read timeout: bound its calls with wait_reply().

        A command that meets a connection Redis closed (Redis restarted since it was pooled) is
        sent once more on a new connection: the old server never ran it. Without that, the first
        fan-out batch after a Redis restart failed on a stale connection while the sockets had
        already joined their groups again (through the layer's other pool) and caught up, and the
        next batch reached them: a client held a later notification without the one before it, and
        its next catch-up (after the later id) could not bring it back.
        """
        clients = self._patient.setdefault(asyncio.get_running_loop(), {})
        client = clients.get(index)
        if client is None:
            host = dict(self.hosts[index])
            host["socket_timeout"] = None
            host["retry_on_error"] = [RedisConnectionError]
            client = clients[index] = aioredis.Redis(connection_pool=create_pool(host))
        return client

    # --- Receiving: one pump per process, many messages per round trip ------------------------

    #: Messages taken off the process channel in one round trip.
    RECEIVE_BATCH = 1000

    async def receive(self, channel):
        """
        The next message for ``channel``.

        Every socket of a process shares one Redis key (the process channel ``specific.<id>!``).
        RedisChannelLayer spends four round trips on each message of it (cleanup script, BZPOPMIN,
        backup ZADD, backup ZPOPMIN) and has every waiting socket contend for one lock: about 600
        messages/s per process. Here one pump task per process takes up to RECEIVE_BATCH waiting
        messages per round trip (``_pop``) and hands each to its socket's queue; a socket's receive
        is a queue get.

        The trade: no backup queue, so messages popped just before the process dies are lost.
        Delivery is at-most-once either way; the client's catch-up from the database recovers them.
        If the pump fails (Redis down), every waiting receive raises, and the consumer closes its
        socket so the client reconnects and catches up.
        """
        if "!" not in channel:
            return await super().receive(channel)
        queues = self._local_queues
        queue = self._queue_for(channel)
        try:
            item = await queue.get()
        except asyncio.CancelledError:
            # The consumer is gone: stop buffering for it.
            if queue.empty() and channel not in self._attached:
                queues.pop(channel, None)
            raise
        if isinstance(item, BaseException):
            queues.pop(channel, None)
            raise item
        return item

    def attach(self, channel: str, handle_now: Callable[[dict], bool] | None = None) -> SocketQueue:
        """
        The queue the pump fills with ``channel``'s messages, for a consumer to read directly.

        Reading it replaces a ``receive()`` per message, which Channels' consumers call through a
        new task and an ``asyncio.wait`` each time (bench/JOURNAL.md, finding 19). A consumer may
        put its own items in it (its client's frames) to handle everything in one order. When the pump fails, the exception itself is put in the queue. The queue is
        kept until ``detach()``.

        ``handle_now(message)``, if given, is offered each message first, on the pump's turn of the
        loop; it returns True if it handled the message there and then (the consumer was idle and
        nothing was queued before it), False to have it queued. It must not raise.
        """
        queue = self._queue_for(channel)
        self._attached.add(channel)
        if handle_now is not None:
            self._handlers_now[channel] = handle_now
        return queue

    def handle_now_of(self, channel: str) -> Callable[[dict], bool] | None:
        """The ``handle_now`` attached for ``channel``, if any."""
        return self._handlers_now.get(channel)

    def detach(self, channel: str) -> None:
        self._attached.discard(channel)
        self._handlers_now.pop(channel, None)
        self._local_queues.pop(channel, None)
        self._touched.pop(channel, None)

    def _queue_for(self, channel: str) -> SocketQueue:
        """``channel``'s local queue (made if missing), with this process' pump running."""
        assert self.require_valid_channel_name(channel) and "!" in channel
        queue = self._local_queues.get(channel)
        if queue is None:
            queue = self._local_queues[channel] = SocketQueue()
        real = self.non_local_name(channel)
        pump = self._pumps.get(real)
        if pump is None or pump.done():
            self._pumps[real] = asyncio.get_running_loop().create_task(self._pump(real))
        return queue

    async def _pump(self, real_channel: str) -> None:
        key = self.prefix + real_channel
        conn = self.patient_connection(self.consistent_hash(real_channel))
        queues = self._local_queues
        timeout = self.reply_timeout
        try:
            while queues:
                members = await self._pop(conn, key, timeout)
                if not members:
                    continue
                now = time.monotonic()
                for member in members:
                    entry = self.deserialize(member)
                    for message in entry[ENVELOPE_KEY] if ENVELOPE_KEY in entry else (entry,):
                        self._deliver_locally(message, now)
                if now - self._swept > self.expiry:
                    self._sweep(now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("channel layer: receiving failed (%s: %s)", type(exc).__name__, exc)
            for target, queue in list(queues.items()):
                if target.startswith(real_channel):
                    queue.put_nowait(exc)

    async def _pop(self, conn: aioredis.Redis, key: str, timeout: float | None) -> list[bytes]:
        """
        Up to RECEIVE_BATCH entries of ``key``, waiting for the first up to ``brpop_timeout``
        seconds; [] if none came.

        A ZPOPMIN of whatever is waiting, and a BZPOPMIN (one entry) when nothing was: commands
        every Redis version has. One BZMPOP per wake-up (Redis 7+, with a fallback where refused)
        measured as noise and was removed (bench/JOURNAL.md, finding 57).
        """
        blocking_timeout = None if timeout is None else timeout + self.brpop_timeout
        popped = await wait_reply(conn.zpopmin(key, self.RECEIVE_BATCH), timeout)
        if popped:
            return [member for member, _ in popped]
        result = await wait_reply(conn.bzpopmin(key, timeout=self.brpop_timeout), blocking_timeout)
        return [] if result is None else [result[1]]

    def _deliver_locally(self, message: dict, now: float) -> None:
        """Hand one message to each socket channel of this process it is for (see attach)."""
        queues = self._local_queues
        handlers_now = self._handlers_now
        targets = message.pop("__asgi_channel__", None) or []
        targets = targets if isinstance(targets, list) else [targets]
        for target in targets:
            self._touched[target] = now
            item = message if len(targets) == 1 else dict(message)
            handle_now = handlers_now.get(target)
            if handle_now is not None and handle_now(item):
                continue
            queue = queues.get(target)
            if queue is None:
                # Not receiving right now (between two receives, or gone): keep it
                # for up to `expiry` seconds, as RedisChannelLayer's buffer does.
                queue = queues[target] = SocketQueue()
            queue.put_nowait(item)

    def _sweep(self, now: float) -> None:
        """Forget buffers nobody received from for `expiry` seconds (their sockets are gone)."""
        self._swept = now
        queues = self._local_queues
        for target, touched in list(self._touched.items()):
            queue = queues.get(target)
            if target in self._attached:
                continue  # its consumer reads it until detach(), even while busy for a while
            if now - touched > self.expiry and (queue is None or not queue.reading()):
                queues.pop(target, None)
                self._touched.pop(target, None)

    def stop_pumps(self) -> None:
        """Cancel this layer's receive pumps (before flushing its keys, or dropping its Redis user)."""
        for pump in self._pumps.values():
            pump.cancel()

    async def group_add_counting(self, group: str, channel: str, *, since: float) -> int:
        """
        ``group_add``, and the group's members that joined (or re-joined) after ``since`` (a Unix
        time), this one included: one round trip, so every server process counts the same set. Through the
        patient client: the caller bounds it with wait_reply() (a busy loop is not a slow Redis).
        """
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        key = self._group_key(group)
        pipe = self.patient_connection(self.consistent_hash(group)).pipeline(transaction=False)
        pipe.zadd(key, {channel: time.time()})
        pipe.expire(key, self.group_expiry)
        pipe.zcount(key, since, "+inf")
        return int((await pipe.execute())[2])

    async def group_discard_batched(self, group: str, channel: str) -> None:
        """
        ``group_discard``, sent with every other discard of the same turn of the loop: one pipelined round trip
        per shard.

        A server that stops closes all its sockets at once (uvicorn: 1012 to each, then each consumer leaves its
        group). One ZREM each meant as many concurrent commands, each on a pooled connection of its own:
        thousands of new Redis connections on the loop that was closing the sockets, and not one of 10,000
        consumers done within uvicorn's 10 s (bench/stop.py; bench/JOURNAL.md, finding 80). The batch is bounded
        by ``wait_reply`` (Redis' time, not a busy loop's): callers await it without a bound of their own. A
        failed batch raises in each of its callers still waiting.
        """
        assert self.require_valid_group_name(group), "Group name not valid"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        loop = asyncio.get_running_loop()
        batch = self._discards.get(loop)
        if batch is None:
            batch = self._discards[loop] = _DiscardBatch()
            batch.task = loop.create_task(self._flush_discards(loop, batch))  # runs on the next turn
        batch.pairs.append((group, channel))
        # A future per caller: a caller that stops waiting cancels only its own. (asyncio.shield of one shared
        # future costs each caller a scan of every other's callback: a tenth of a 10,000-socket stop.)
        waiter = loop.create_future()
        batch.waiters.append(waiter)
        await waiter

    async def _flush_discards(self, loop, batch: "_DiscardBatch") -> None:
        """Send ``batch``'s discards, those queued until now: one pipeline of ZREMs per shard."""
        if self._discards.get(loop) is batch:
            del self._discards[loop]  # the discards from now on make the next batch
        by_shard: dict[int, list[tuple[str, str]]] = collections.defaultdict(list)
        for group, channel in batch.pairs:
            by_shard[self.consistent_hash(group)].append((group, channel))

        async def discard(index: int, members: list[tuple[str, str]]) -> None:
            # Patient, bounded by wait_reply: the turns of a stopping server's loop are long, and a read timeout
            # (or a new pooled connection to open) lost the race with the process' exit.
            pipe = self.patient_connection(index).pipeline(transaction=False)
            for group, channel in members:
                pipe.zrem(self._group_key(group), channel)
            await wait_reply(pipe.execute(), self.reply_timeout)

        try:
            await asyncio.gather(*(discard(index, members) for index, members in by_shard.items()))
        except Exception as exc:
            logger.warning("%d group discard(s) not sent (%s: %s); the memberships expire by themselves", len(batch.pairs), type(exc).__name__, exc)
            for waiter in batch.waiters:
                if not waiter.done():  # not given up (cancelled) by its caller
                    waiter.set_exception(exc)
        else:
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def group_key(self, group: str) -> bytes:
        """The Redis key of ``group``'s members (channels-redis' format, realtime/layers/compat.py)."""
        return self._group_key(group)

    # --- Sending: many groups per round trip ----------------------------------------------------

    def fits_one_script(self, messages: Sequence[tuple[str, dict]]) -> bool:
        """
        Whether SEND_LUA can send this batch: one Redis host, one capacity for every channel, the
        stock msgpack serializer without encryption, and messages whose values survive Redis' Lua
        msgpack unchanged (text, booleans, integers a double holds exactly; fan-out's events).
        """
        if not self._one_script_layer or len(messages) > ONE_SCRIPT_MAX:
            return False
        for _, message in messages:
            for name, value in message.items():
                kind = type(value)
                if kind is int:
                    if not -(2**53) < value < 2**53:
                        return False
                elif (kind is not str and kind is not bool) or type(name) is not str:
                    return False
        return True

    async def _group_send_one_script(self, messages: Sequence[tuple[str, dict]], now: float) -> int:
        """group_send_many in one round trip (SEND_LUA): the same entries, scores and capacity checks."""
        keys, bodies = [], []
        for group, message in messages:
            keys.append(self._group_key(group))
            bodies.append(self._serializer.as_bytes(message))
        entry_prefix = secrets.token_bytes(self._serializer.random_prefix_length - 4)
        args = [
            int(now) - self.group_expiry, self.prefix, int(self.expiry), self.capacity,
            self._score_base(now, len(messages)), self.ENVELOPE, ENVELOPE_KEY, entry_prefix,
        ]
        conn = self.patient_connection(0)
        return int(await wait_reply(conn.eval(SEND_LUA, len(keys), *keys, *args, *bodies), self.reply_timeout))

    def _score_base(self, now: float, count: int) -> float:
        """
        The first score of a batch, above every score of the previous batch: a big batch spreads
        its scores over ``count`` microseconds, and the next one must not sort in between.
        """
        base = max(now, getattr(self, "_next_score", 0.0))
        self._next_score = base + (count + 1) * 1e-6
        return base

    async def group_send_many(self, messages: Sequence[tuple[str, dict]]) -> int:
        """Send each (group, message) pair; returns how many channel deliveries were dropped as over capacity."""
        if not messages:
            return 0
        for group, _ in messages:
            assert self.require_valid_group_name(group), "Group name not valid"
        now = time.time()
        if self.fits_one_script(messages):
            dropped = await self._group_send_one_script(messages, now)
        else:
            dropped = await self._group_send_two_calls(messages, now)
        if dropped:
            logger.warning("channel layer: %d message(s) dropped, channels over capacity", dropped)
        return dropped

    async def _group_send_two_calls(self, messages: Sequence[tuple[str, dict]], now: float) -> int:
        """group_send_many for any batch: the members in one call, the push in another (per shard)."""
        # 1. Members of every group: one script call per Redis shard (and per 2,000 groups). A
        # pipeline of two commands per group spent most of its time packing commands in Python.
        by_conn: dict[int, list[int]] = collections.defaultdict(list)
        for i, (group, _) in enumerate(messages):
            by_conn[self.consistent_hash(group)].append(i)
        # A shard that fails drops its own groups' messages only: the others' still go, so a socket whose
        # group is on a healthy shard gets no gap below what it receives next (its catch-up resumes
        # after the highest id it holds). The first failure is raised once the rest is sent.
        failure: BaseException | None = None
        members: list[list[str]] = [[] for _ in messages]
        cutoff = int(now) - self.group_expiry
        for index, positions in by_conn.items():
            conn = self.patient_connection(index)
            try:
                for start in range(0, len(positions), 2000):
                    chunk = positions[start : start + 2000]
                    keys = [self._group_key(messages[i][0]) for i in chunk]
                    results = await wait_reply(conn.eval(MEMBERS_LUA, len(keys), *keys, cutoff), self.reply_timeout)
                    for i, result in zip(chunk, results):
                        members[i] = [x.decode("utf8") for x in result]
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                failure = failure or exc
                for i in positions:
                    members[i] = []

        # 2. Each message once per channel key it must reach, grouped by key in batch order.
        per_key_bodies: dict[str, list[dict]] = {}
        for (group, message), channels in zip(messages, members):
            per_key: dict[str, list[str]] = {}
            for channel in channels:
                non_local = self.non_local_name(channel) if "!" in channel else channel
                per_key.setdefault(non_local, []).append(channel)
            for non_local, chans in per_key.items():
                body = dict(message)
                body["__asgi_channel__"] = chans
                per_key_bodies.setdefault(non_local, []).append(body)

        # 3. One entry per ENVELOPE messages of a process key: the sockets of a server process share
        # that key, and its pump unpacks the envelope (a broadcast to 10,000 users is ten entries
        # per process, not 5,000: redis-py packed and the pump parsed every entry one by one,
        # about half of a broadcast's time: bench/JOURNAL.md, finding 20). Other channels get one
        # entry per message, as RedisChannelLayer.group_send gives them. Scores rise within a key and from one batch
        # to the next (see _score_base): equal scores would sort by their bytes.
        base = self._score_base(now, len(messages))
        pushes: dict[int, list[tuple[bytes, bytes, int, float, int]]] = collections.defaultdict(list)
        for non_local, bodies in per_key_bodies.items():
            key = (self.prefix + non_local).encode("utf8")
            capacity = self.get_capacity(bodies[0]["__asgi_channel__"][0])
            if "!" in non_local:
                entries = [
                    (self.serialize({ENVELOPE_KEY: bodies[i : i + self.ENVELOPE]}), len(bodies[i : i + self.ENVELOPE]))
                    for i in range(0, len(bodies), self.ENVELOPE)
                ]
            else:
                entries = [(self.serialize(body), 1) for body in bodies]
            shard = pushes[self.consistent_hash(non_local)]
            for seq, (data, weight) in enumerate(entries):
                shard.append((key, data, capacity, base + seq * 1e-6, weight))

        # 4. One script call per shard, in slices of about 1,000 entries to keep each call's size
        # reasonable; a key's entries are never split across slices (see PUSH_LUA).
        dropped = 0
        for index, items in pushes.items():
            conn = self.patient_connection(index)
            by_key: dict[bytes, list] = {}
            for item in items:
                by_key.setdefault(item[0], []).append(item)
            chunks, chunk = [], []
            for key_items in by_key.values():
                chunk.extend(key_items)
                if len(chunk) >= 1000:
                    chunks.append(chunk)
                    chunk = []
            if chunk:
                chunks.append(chunk)
            try:
                for chunk in chunks:
                    keys = [item[0] for item in chunk]
                    args = [item[1] for item in chunk] + [item[2] for item in chunk] + [item[3] for item in chunk]
                    args += [item[4] for item in chunk]
                    args.append(int(self.expiry))
                    dropped += int(await wait_reply(conn.eval(PUSH_LUA, len(keys), *keys, *args), self.reply_timeout))
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return dropped


class _DiscardBatch:
    """The group discards of one turn of the loop (``group_discard_batched``), and the task that sends them."""

    __slots__ = ("pairs", "waiters", "task")

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []
        self.waiters: list[asyncio.Future] = []  # one per caller, resolved when the batch is sent
        self.task: asyncio.Task | None = None
