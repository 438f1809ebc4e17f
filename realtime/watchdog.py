"""
No socket stays open and deaf when a Redis shard fails or loses its state.

channels-redis keeps group memberships in Redis. When Redis restarts without its data (or is
flushed, or fails over to a replica without it), every open socket of a server process is still
connected but no longer in its group: it would never hear another event. A receive that fails
closes its own socket (consumers.py), but only the one socket that was receiving sees the error;
the others reach the new Redis transparently and stay deaf.

So each server process runs one watchdog task. Every REALTIME['LAYER_CHECK_SECONDS'] it reads a
marker key on each Redis shard of the layer (setting it when missing), each shard on its own: one
round trip, bounded by REALTIME['SEND_TIMEOUT']. A shard is lost when its check failed (down or not
answering) or its marker changed (the data was lost; another process already set a new marker).
The watchdog then closes with 1012 the sockets the lost shard concerns: those whose group lives on
it, and, when it holds the process' receive key (every socket of the process reads its messages
through that one key, which may have lost some), every socket of the process. A socket's two shards
are hashed once, as it joins. The others stay open: one shard lost out of several does not send the
whole fleet reconnecting every second it stays down. With one shard, every socket is concerned.
Clients reconnect, join their group again and catch up from the database: nothing is lost.

It reads channels-redis' ``ring_size``, ``connection(index)``, ``consistent_hash(name)`` and
``prefix`` (listed with the layer's other channels-redis internals in realtime/layers/compat.py),
and channels' ``non_local_name(channel)`` (BaseChannelLayer): the process key of a socket's channel.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref

from .conf import realtime_setting
from .layers.replies import wait_reply
from .protocol import CLOSE_SERVICE_RESTART

logger = logging.getLogger(__name__)

#: Each open socket -> the shards it lives on: (its group's, its process key's), hashed once as it joins.
_sockets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_task: asyncio.Task | None = None


def register(consumer) -> None:
    """A socket joined its group: close it when the shard of its group or of its process key fails or forgets."""
    layer = consumer.channel_layer
    if layer is None or not hasattr(layer, "connection") or not hasattr(layer, "ring_size"):
        return  # not a Redis layer: nothing to lose
    _sockets[consumer] = (layer.consistent_hash(consumer.group), layer.consistent_hash(layer.non_local_name(consumer.channel_name)))
    _ensure_started(layer)


def unregister(consumer) -> None:
    _sockets.pop(consumer, None)


def _ensure_started(layer) -> None:
    global _task
    loop = asyncio.get_running_loop()
    if _task is not None and not _task.done() and _task.get_loop() is loop:
        return
    _task = loop.create_task(_watch(layer), name="realtime-layer-watchdog")


async def _marker(layer, index: int, key: str) -> bytes:
    conn = layer.patient_connection(index) if hasattr(layer, "patient_connection") else layer.connection(index)
    # One round trip: each is a few turns of a loop that may be busy.
    pipe = conn.pipeline(transaction=False)
    pipe.set(key, uuid.uuid4().hex, nx=True)
    pipe.get(key)
    return (await pipe.execute())[1]


async def _markers(layer, key: str) -> list:
    """Each shard's marker, or the exception its check raised; the shards are read at once, each bounded on its own."""
    timeout = realtime_setting("SEND_TIMEOUT")
    checks = (wait_reply(_marker(layer, index, key), timeout) for index in range(layer.ring_size))
    return await asyncio.gather(*checks, return_exceptions=True)


async def _watch(layer) -> None:
    key = f"{layer.prefix}:inbox.layer-epoch"
    # The markers as the first sockets joined: a shard lost and back before the first check is a changed marker.
    # A shard whose first read failed has none: its next check that fails closes its sockets.
    known = [None if isinstance(value, BaseException) else value for value in await _markers(layer, key)]
    while True:
        await asyncio.sleep(realtime_setting("LAYER_CHECK_SECONDS"))
        lost: dict[int, str] = {}
        for index, value in enumerate(await _markers(layer, key)):
            if isinstance(value, BaseException):
                lost[index] = f"the channel layer check failed ({type(value).__name__}: {value})"
                continue
            if known[index] is not None and value != known[index]:
                lost[index] = "the channel layer lost its state (Redis restarted, flushed or failed over)"
            known[index] = value
        if lost:
            await close_concerned(layer, lost)


async def close_concerned(layer, lost: dict[int, str]) -> int:
    """
    Close with 1012 every registered socket whose group or process key is on a shard of ``lost``
    (shard index -> why it is lost); the others stay registered. Returns how many were closed.
    """
    registered = list(_sockets.items())
    concerned = [consumer for consumer, (group, process) in registered if group in lost or process in lost]
    for consumer in concerned:
        _sockets.pop(consumer, None)
    if concerned:
        if layer.ring_size == 1:
            where, why = "", lost[0]
        else:
            shards = sorted(lost)
            where = f", those whose group or process key is on shard {', '.join(map(str, shards))} of {layer.ring_size}"
            why = "; ".join(f"shard {index}: {lost[index]}" for index in shards)
        logger.warning(
            "closing %d of %d socket(s) with 1012%s: %s; clients reconnect and catch up", len(concerned), len(registered), where, why
        )
    for consumer in concerned:
        try:
            await consumer.close(code=CLOSE_SERVICE_RESTART)
        except Exception:  # the socket is already gone
            pass
    return len(concerned)
