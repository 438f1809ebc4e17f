"""
No socket stays open and deaf when Redis fails or loses its state.

channels-redis keeps group memberships in Redis. When Redis restarts without its data (or is
flushed, or fails over to a replica without it), every open socket of a server process is still
connected but no longer in its group: it would never hear another event. A receive that fails
closes its own socket (consumers.py), but only the one socket that was receiving sees the error;
the others reach the new Redis transparently and stay deaf.

So each server process runs one watchdog task. Every REALTIME['LAYER_CHECK_SECONDS'] it reads a
marker key on every Redis shard of the layer (setting it when missing). When the check fails
(Redis down or not answering within REALTIME['SEND_TIMEOUT']) or a marker changed (the data was
lost; another process already set a new marker), it closes every socket of this process with 1012.
Clients reconnect, join their group again and catch up from the database: nothing is lost.

It reads channels-redis' ``ring_size``, ``connection(index)`` and ``prefix`` (listed with the
layer's other channels-redis internals in realtime/layers/compat.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref

from channels.layers import get_channel_layer

from .conf import realtime_setting
from .layers.replies import wait_reply
from .protocol import CLOSE_SERVICE_RESTART

logger = logging.getLogger(__name__)

_sockets: weakref.WeakSet = weakref.WeakSet()
_task: asyncio.Task | None = None


def register(consumer) -> None:
    """A socket joined its group: close it when the layer fails or forgets the group."""
    _sockets.add(consumer)
    _ensure_started()


def unregister(consumer) -> None:
    _sockets.discard(consumer)


def _ensure_started() -> None:
    global _task
    loop = asyncio.get_running_loop()
    if _task is not None and not _task.done() and _task.get_loop() is loop:
        return
    layer = get_channel_layer()
    if layer is None or not hasattr(layer, "connection") or not hasattr(layer, "ring_size"):
        return  # not a Redis layer: nothing to lose
    _task = loop.create_task(_watch(layer), name="realtime-layer-watchdog")


async def _markers(layer, key: str) -> tuple:
    patient = hasattr(layer, "patient_connection")
    values = []
    for index in range(layer.ring_size):
        conn = layer.patient_connection(index) if patient else layer.connection(index)
        # One round trip per shard: each is a few turns of a loop that may be busy.
        pipe = conn.pipeline(transaction=False)
        pipe.set(key, uuid.uuid4().hex, nx=True)
        pipe.get(key)
        values.append((await pipe.execute())[1])
    return tuple(values)


async def _watch(layer) -> None:
    key = f"{layer.prefix}:inbox.layer-epoch"
    known: tuple | None = None
    try:
        # The markers as the first sockets joined: a Redis lost and back before the first check is a changed marker.
        known = await wait_reply(_markers(layer, key), realtime_setting("SEND_TIMEOUT"))
    except asyncio.CancelledError:
        raise
    except Exception:
        pass  # the first check below closes the sockets
    while True:
        await asyncio.sleep(realtime_setting("LAYER_CHECK_SECONDS"))
        try:
            values = await wait_reply(_markers(layer, key), realtime_setting("SEND_TIMEOUT"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await close_all(f"the channel layer check failed ({type(exc).__name__}: {exc})")
            continue
        if known is not None and values != known:
            await close_all("the channel layer lost its state (Redis restarted, flushed or failed over)")
        known = values


async def close_all(reason: str) -> int:
    """Close every registered socket of this process with 1012; returns how many."""
    sockets = list(_sockets)
    _sockets.clear()
    if sockets:
        logger.warning("closing %d socket(s) with 1012: %s; clients reconnect and catch up", len(sockets), reason)
    for consumer in sockets:
        try:
            await consumer.close(code=CLOSE_SERVICE_RESTART)
        except Exception:  # the socket is already gone
            pass
    return len(sockets)
