"""realtime.layers.redis: BatchingRedisChannelLayer (group_send_many, attach, the receive pump) against the real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.exceptions import ResponseError

from realtime.layers import BatchingRedisChannelLayer
from realtime.layers.scripts import ONE_SCRIPT_MAX


@pytest.fixture(params=["one script", "two calls"])
async def make_layer(redis_url, request):
    """Layers that send a batch in one script call where they can (the default), or always in two."""
    layers: list[BatchingRedisChannelLayer] = []

    def make(**config) -> BatchingRedisChannelLayer:
        layer = BatchingRedisChannelLayer(hosts=[redis_url], prefix=f"test-{uuid.uuid4().hex[:8]}", **config)
        if request.param == "two calls":
            layer.fits_one_script = lambda messages: False
        layers.append(layer)
        return layer

    yield make
    for layer in layers:
        await layer.flush()


async def receive_all(layer, channel: str, timeout: float = 2.0) -> list[dict]:
    """Everything waiting on a channel, in order."""
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(layer.receive(channel), timeout if not got else 0.2))
        except asyncio.TimeoutError:
            return got


async def test_group_send_many_delivers_to_every_member_of_many_groups(make_layer):
    layer = make_layer()
    members = {}
    for g in range(40):
        group = f"inbox.user.{g}"
        members[group] = [await layer.new_channel() for _ in range(2)]
        for channel in members[group]:
            await layer.group_add(group, channel)
    dropped = await layer.group_send_many([(group, {"type": "notification.created", "n": g}) for g, group in enumerate(members)])
    assert dropped == 0
    for g, (group, channels) in enumerate(members.items()):
        for channel in channels:
            assert await asyncio.wait_for(layer.receive(channel), 2) == {"type": "notification.created", "n": g}


async def test_group_send_many_reaches_channels_of_another_process(make_layer):
    """Sockets held by another daphne process: its own layer instance, its own client prefix."""
    sender, other_process = make_layer(), make_layer()
    other_process.prefix = sender.prefix
    channel = await other_process.new_channel()
    await other_process.group_add("inbox.user.7", channel)
    await sender.group_send_many([("inbox.user.7", {"type": "notification.created", "n": 1})])
    assert await asyncio.wait_for(other_process.receive(channel), 2) == {"type": "notification.created", "n": 1}


async def test_group_send_many_keeps_the_order_of_messages_to_one_group_in_one_batch(make_layer):
    layer = make_layer()
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("inbox.user.1", a)
    await layer.group_add("inbox.user.1", b)
    await layer.group_add("inbox.user.2", b)
    batch = []
    for i in range(25):
        batch.append(("inbox.user.1", {"type": "t", "i": i}))
        batch.append(("inbox.user.2", {"type": "t", "i": 100 + i}))
    await layer.group_send_many(batch)
    assert [m["i"] for m in await receive_all(layer, a)] == list(range(25))
    assert [m["i"] for m in await receive_all(layer, b)] == [x for i in range(25) for x in (i, 100 + i)]


async def test_group_send_many_keeps_order_across_batches(make_layer):
    layer = make_layer()
    a = await layer.new_channel()
    await layer.group_add("inbox.user.1", a)
    for i in range(5):
        await layer.group_send_many([("inbox.user.1", {"type": "t", "i": 2 * i}), ("inbox.user.1", {"type": "t", "i": 2 * i + 1})])
    assert [m["i"] for m in await receive_all(layer, a)] == list(range(10))


async def test_group_send_many_honours_the_channel_capacity(make_layer):
    """
    A process key whose backlog reached the capacity gets nothing more until it is read. The
    backlog counts entries: one batch's messages for one process travel in one entry.
    """
    layer = make_layer(capacity=3)
    a = await layer.new_channel()
    await layer.group_add("inbox.user.1", a)
    for i in range(3):
        assert await layer.group_send_many([("inbox.user.1", {"type": "t", "i": i})]) == 0
    assert await layer.group_send_many([("inbox.user.1", {"type": "t", "i": 3}), ("inbox.user.1", {"type": "t", "i": 4})]) == 2
    assert [m["i"] for m in await receive_all(layer, a)] == [0, 1, 2]
    # Room again once the channel was read.
    assert await layer.group_send_many([("inbox.user.1", {"type": "t", "i": 9})]) == 0
    assert [m["i"] for m in await receive_all(layer, a)] == [9]


async def test_a_plain_channel_over_capacity_drops_the_rest(make_layer):
    layer = make_layer(capacity=2)
    await layer.group_add("inbox.user.1", "worker.plain")
    await layer.group_send_many([("inbox.user.1", {"type": "t", "i": i}) for i in range(3)])
    assert await layer.group_send_many([("inbox.user.1", {"type": "t", "i": 3})]) == 1
    assert [m["i"] for m in await receive_all(layer, "worker.plain")] == [0, 1, 2]


async def test_a_bulk_send_to_many_sockets_of_one_process_is_not_cut_by_the_capacity(make_layer):
    """
    The sockets of one process share one Redis key: a bulk send to more users than the capacity
    must still reach each of them (the capacity bounds a backlog, not the size of one batch).
    """
    layer = make_layer(capacity=10)
    channels = {}
    for u in range(1, 51):
        channels[u] = await layer.new_channel()
        await layer.group_add(f"inbox.user.{u}", channels[u])
    dropped = await layer.group_send_many([(f"inbox.user.{u}", {"type": "t", "u": u}) for u in channels])
    assert dropped == 0
    for u, channel in channels.items():
        assert await asyncio.wait_for(layer.receive(channel), 2) == {"type": "t", "u": u}


async def test_a_bulk_send_to_one_process_travels_in_envelopes_and_reaches_every_socket_in_order(make_layer):
    layer = make_layer(capacity=100)
    channels = [await layer.new_channel() for _ in range(2500)]
    pipe = layer.connection(0).pipeline(transaction=False)
    for u, channel in enumerate(channels):
        pipe.zadd(layer.group_key(f"inbox.user.{u}"), {channel: time.time()})
    pipe.zadd(layer.group_key("inbox.user.0"), {"worker.plain": time.time()})  # not a process channel
    await pipe.execute()
    batch = [(f"inbox.user.{u}", {"type": "t", "u": u}) for u in range(2500)]
    batch.append(("inbox.user.0", {"type": "t", "u": "again"}))
    assert await layer.group_send_many(batch) == 0
    # 2,501 messages for the process key in three entries of at most ENVELOPE (1,000) messages.
    process_key = layer.prefix + layer.non_local_name(channels[0])
    assert await layer.connection(0).zcard(process_key) == 3
    # The plain channel gets each message as its own entry, readable by any channels-redis reader.
    assert await layer.connection(0).zcard(layer.prefix + "worker.plain") == 2
    assert [m["u"] for m in await receive_all(layer, "worker.plain")] == [0, "again"]

    queues = {channel: layer.attach(channel) for channel in channels}
    try:
        deadline = time.monotonic() + 5
        while sum(q.qsize() for q in queues.values()) < 2501 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert queues[channels[0]].get_nowait() == {"type": "t", "u": 0}
        assert queues[channels[0]].get_nowait() == {"type": "t", "u": "again"}
        for u, channel in enumerate(channels[1:], start=1):
            assert queues[channel].get_nowait() == {"type": "t", "u": u}
        assert all(q.empty() for q in queues.values())
    finally:
        for channel in channels:
            layer.detach(channel)


async def test_a_dropped_envelope_counts_every_message_it_held(make_layer):
    layer = make_layer(capacity=1)
    channels = [await layer.new_channel() for _ in range(3)]
    for u, channel in enumerate(channels):
        await layer.group_add(f"inbox.user.{u}", channel)
    assert await layer.group_send_many([(f"inbox.user.{u}", {"type": "t", "u": u}) for u in range(3)]) == 0
    # The key holds one entry (the first batch) and its capacity is 1: the next batch's 3 are dropped.
    assert await layer.group_send_many([(f"inbox.user.{u}", {"type": "t", "u": u}) for u in range(3)]) == 3


async def test_group_send_many_to_a_group_without_members_sends_nothing(make_layer):
    layer = make_layer()
    assert await layer.group_send_many([("inbox.user.404", {"type": "t"})]) == 0
    assert await layer.group_send_many([]) == 0


async def test_group_send_many_skips_members_older_than_the_group_expiry(make_layer):
    layer = make_layer(group_expiry=1)
    a = await layer.new_channel()
    await layer.group_add("inbox.user.1", a)
    await asyncio.sleep(2.05)
    await layer.group_send_many([("inbox.user.1", {"type": "t"})])
    assert await receive_all(layer, a, timeout=0.3) == []
    await layer.group_add("inbox.user.1", a)
    await layer.group_send_many([("inbox.user.1", {"type": "t"})])
    assert await receive_all(layer, a) == [{"type": "t"}]


async def test_group_send_many_refuses_an_invalid_group_name(make_layer):
    layer = make_layer()
    with pytest.raises((AssertionError, TypeError)):
        await layer.group_send_many([("not a valid group name!", {"type": "t"})])


async def test_an_attached_consumer_is_offered_each_message_first_and_what_it_declines_is_queued(make_layer):
    layer = make_layer()
    channel = await layer.new_channel()
    offered = []

    def handle_now(message) -> bool:
        offered.append(message["n"])
        return message["n"] % 2 == 0  # handled the even ones there and then

    queue = layer.attach(channel, handle_now)
    await layer.group_add("inbox.user.3", channel)
    await layer.group_send_many([("inbox.user.3", {"type": "notification.created", "n": n}) for n in range(6)])
    queued = [await asyncio.wait_for(queue.get(), 2) for _ in range(3)]
    assert offered == [0, 1, 2, 3, 4, 5]
    assert [m["n"] for m in queued] == [1, 3, 5]
    layer.detach(channel)
    assert layer.handle_now_of(channel) is None


async def test_a_batch_to_one_process_travels_in_envelopes_of_the_configured_size_in_order(make_layer):
    layer = make_layer()
    layer.ENVELOPE = 3
    channels = [await layer.new_channel() for _ in range(8)]
    for u, channel in enumerate(channels):
        await layer.group_add(f"inbox.user.{u}", channel)
    assert await layer.group_send_many([(f"inbox.user.{u}", {"type": "t", "u": u}) for u in range(8)]) == 0
    process_key = layer.prefix + layer.non_local_name(channels[0])
    assert await layer.connection(0).zcard(process_key) == 3  # 3 + 3 + 2
    for u, channel in enumerate(channels):
        assert await asyncio.wait_for(layer.receive(channel), 2) == {"type": "t", "u": u}


async def _entries(layer, key: str) -> list:
    """The messages a channel key holds, in score order, decoded as a reader would."""
    raw = await layer.connection(0).zrange(key, 0, -1, withscores=True)
    return [layer.deserialize(member) for member, _ in raw]


async def test_one_script_writes_the_entries_the_two_calls_write(redis_url):
    """
    Two processes' sockets, a plain channel, an expired member, envelopes of two, a resend flag:
    the same batch through each way leaves the same messages on each key, in the same order.
    """
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    one, two = (BatchingRedisChannelLayer(hosts=[redis_url], prefix=f"{prefix}-{way}", group_expiry=60) for way in ("one", "two"))
    two.fits_one_script = lambda messages: False
    try:
        process_a, process_b = f"specific.{uuid.uuid4().hex}!", f"specific.{uuid.uuid4().hex}!"
        for layer in (one, two):
            layer.ENVELOPE = 2
            conn = layer.connection(0)
            now = time.time()
            for u in range(5):
                await conn.zadd(layer.group_key(f"inbox.user.{u}"), {f"{process_a}s{u}": now, f"{process_b}t{u}": now})
            await conn.zadd(layer.group_key("inbox.user.1"), {f"{process_a}second": now, "worker.plain": now})
            await conn.zadd(layer.group_key("inbox.user.2"), {f"{process_b}gone": now - 120})  # past the group expiry
            batch = [(f"inbox.user.{u % 5}", {"type": "notification.created", "id": 100 + u, "frame": f"frame {u} \u00e9"})
                     for u in range(7)]
            batch.append(("inbox.user.1", {"type": "notification.created", "id": 7, "frame": "again", "resend": True}))
            assert await layer.group_send_many(batch) == 0
        for key in (process_a, process_b, "worker.plain"):
            assert await _entries(one, one.prefix + key) == await _entries(two, two.prefix + key)
        first = (await _entries(one, one.prefix + process_a))[0]["__inbox_envelope__"][0]
        assert first == {"type": "notification.created", "id": 100, "frame": "frame 0 \u00e9", "__asgi_channel__": [f"{process_a}s0"]}
        assert len(await _entries(one, one.prefix + process_b)) == 4  # 7 messages reach process b: 2 + 2 + 2 + 1
        assert len(await _entries(one, one.prefix + "worker.plain")) == 3  # one entry per message for a plain channel
    finally:
        await one.flush()
        await two.flush()


async def test_a_batch_of_fan_out_events_is_one_round_trip_and_anything_else_takes_two(redis_url):
    layer = BatchingRedisChannelLayer(hosts=[redis_url], prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        channel = await layer.new_channel()
        await layer.group_add("inbox.user.1", channel)
        calls = []
        client = layer.patient_connection(0)
        real_eval = client.eval

        async def counting_eval(*args):
            calls.append(args[0])
            return await real_eval(*args)

        client.eval = counting_eval
        event = {"type": "notification.created", "id": 1, "frame": "{}"}
        await layer.group_send_many([("inbox.user.1", event), ("inbox.user.1", {**event, "resend": True})])
        assert len(calls) == 1
        calls.clear()
        await layer.group_send_many([("inbox.user.1", {"type": "t", "payload": {"nested": 1}})])
        assert len(calls) == 2
        assert [m.get("resend") for m in await receive_all(layer, channel)] == [None, True, None]
    finally:
        await layer.flush()
    for message in ({"type": "t", "x": 1.5}, {"type": "t", "x": None}, {"type": "t", "x": b"raw"}, {"type": "t", "x": 2**60}):
        assert not layer.fits_one_script([("inbox.user.1", message)])
    assert layer.fits_one_script([("inbox.user.1", {"type": "t", "x": 2**52, "ok": False})] * ONE_SCRIPT_MAX)
    assert not layer.fits_one_script([("inbox.user.1", {"type": "t"})] * (ONE_SCRIPT_MAX + 1))
    for config in ({"channel_capacity": {"worker.*": 5}}, {"symmetric_encryption_keys": ["a secret of the test"]}):
        other = BatchingRedisChannelLayer(hosts=[redis_url], **config)
        assert not other.fits_one_script([("inbox.user.1", {"type": "t"})])



def _record_commands(client) -> list[str]:
    """The names of the commands ``client`` sends from now on."""
    commands: list[str] = []
    real = client.execute_command

    async def recording(*args, **kwargs):
        commands.append(args[0])
        return await real(*args, **kwargs)

    client.execute_command = recording
    return commands


@pytest.fixture
async def pump_layers(redis_url):
    """Layers of their own prefix on ``redis_url``; their pumps stopped and keys flushed after."""
    layers: list[BatchingRedisChannelLayer] = []

    def make() -> BatchingRedisChannelLayer:
        layers.append(BatchingRedisChannelLayer(hosts=[redis_url], prefix=f"test-{uuid.uuid4().hex[:8]}"))
        return layers[-1]

    yield make
    for layer in layers:
        layer.stop_pumps()
        await layer.flush()


async def _three_sockets_of_one_process(layer) -> list[str]:
    channels = [await layer.new_channel() for _ in range(3)]
    for i, channel in enumerate(channels):
        await layer.group_add(f"inbox.user.{i}", channel)
    return channels


async def test_a_pump_receives_with_zpopmin_and_bzpopmin(pump_layers):
    """ZPOPMIN takes what waits, BZPOPMIN waits for the next: commands every Redis has (finding 57)."""
    layer = pump_layers()
    client = layer.patient_connection(0)
    channels = await _three_sockets_of_one_process(layer)
    commands = _record_commands(client)
    receiving = asyncio.gather(*(receive_all(layer, channel) for channel in channels))
    await layer.group_send_many([(f"inbox.user.{i}", {"type": "t", "batch": 0}) for i in range(3)])
    await asyncio.sleep(0.05)
    await layer.group_send_many([(f"inbox.user.{i}", {"type": "t", "batch": 1}) for i in range(3)])
    assert await receiving == [[{"type": "t", "batch": 0}, {"type": "t", "batch": 1}]] * 3
    assert {"ZPOPMIN", "BZPOPMIN"} <= set(commands)
    assert "BZMPOP" not in commands


async def test_a_refused_pop_fails_the_pump(pump_layers):
    layer = pump_layers()
    client = layer.patient_connection(0)
    channel = await layer.new_channel()
    await client.set(layer.prefix + layer.non_local_name(channel), "not a sorted set")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await asyncio.wait_for(layer.receive(channel), 2)


async def test_sockets_opened_after_a_redis_restart_join_their_groups_on_the_first_try(private_redis):
    """Each connection the layer pooled before the restart is stale; a join that meets one is sent again on a new one."""
    layer = BatchingRedisChannelLayer(hosts=[{"address": private_redis.url, "socket_timeout": 1.0}], prefix=f"test-{uuid.uuid4().hex[:8]}")
    channels = [await layer.new_channel() for _ in range(20)]
    # 20 joins at once fill the pool with 20 connections.
    await asyncio.gather(*(layer.group_add(f"g{i}", c) for i, c in enumerate(channels)))
    private_redis.stop()
    private_redis.start()
    results = await asyncio.gather(*(layer.group_add(f"h{i}", c) for i, c in enumerate(channels)), return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert private_redis.client().zcard(f"{layer.prefix}:group:h0") == 1
    await layer.flush()


async def test_the_discards_of_one_turn_are_one_pipeline_and_leave_the_other_members(make_layer):
    layer = make_layer()
    stay, leaving = await layer.new_channel(), [await layer.new_channel() for _ in range(30)]
    for i, channel in enumerate(leaving):
        await layer.group_add(f"inbox.user.{i % 3}", channel)
    await layer.group_add("inbox.user.0", stay)
    client = layer.patient_connection(0)
    commands, pipelines = _record_commands(client), []
    real_pipeline = client.pipeline

    def recording_pipeline(*args, **kwargs):
        pipelines.append(real_pipeline(*args, **kwargs))
        return pipelines[-1]

    client.pipeline = recording_pipeline
    await asyncio.gather(*(layer.group_discard_batched(f"inbox.user.{i % 3}", c) for i, c in enumerate(leaving)))
    assert commands == [] and len(pipelines) == 1, "one round trip for the 30 discards"
    members = {g: await client.zrange(layer.group_key(g), 0, -1) for g in ("inbox.user.0", "inbox.user.1", "inbox.user.2")}
    assert members == {"inbox.user.0": [stay.encode()], "inbox.user.1": [], "inbox.user.2": []}


async def test_a_failed_batch_of_discards_raises_in_each_caller_and_one_that_gave_up_stops_no_other(make_layer):
    layer = make_layer()
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("inbox.user.1", channel)
    calls = [asyncio.ensure_future(layer.group_discard_batched("inbox.user.1", c)) for c in channels]
    await asyncio.sleep(0)  # each has joined the batch, which is sent on the next turn
    calls[0].cancel()  # as the consumer's timeout does
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(r) for r in results] == [asyncio.CancelledError, type(None), type(None)]
    assert await layer.patient_connection(0).zrange(layer.group_key("inbox.user.1"), 0, -1) == [], "the batch went all the same"

    client = layer.patient_connection(0)
    real_pipeline = client.pipeline

    def failing_pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)

        async def refused():
            raise ConnectionError("refused")

        pipe.execute = refused
        return pipe

    client.pipeline = failing_pipeline
    results = await asyncio.gather(*(layer.group_discard_batched("inbox.user.1", c) for c in channels), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 3
