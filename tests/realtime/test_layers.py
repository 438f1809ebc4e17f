"""BatchingRedisChannelLayer.group_send_many against the real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from realtime.layers import BatchingRedisChannelLayer


@pytest.fixture
async def make_layer(redis_url):
    layers: list[BatchingRedisChannelLayer] = []

    def make(**config) -> BatchingRedisChannelLayer:
        layer = BatchingRedisChannelLayer(hosts=[redis_url], prefix=f"test-{uuid.uuid4().hex[:8]}", **config)
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
        pipe.zadd(layer._group_key(f"inbox.user.{u}"), {channel: time.time()})
    pipe.zadd(layer._group_key("inbox.user.0"), {"worker.plain": time.time()})  # not a process channel
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
    assert channel not in layer._handlers_now
