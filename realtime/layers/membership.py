"""
A socket's join of its user's group, counting the user's open sockets (REALTIME['MAX_SOCKETS_PER_USER']), and its leave.

With the Redis layer the count is the group's sorted set, the same for every server process
(``BatchingRedisChannelLayer.group_add_counting``); with channels' in-memory layer it is this
process' own groups. Only members that joined or re-joined recently count: a live socket re-joins
every REALTIME['GROUP_REFRESH_SECONDS'], so an older member is one whose process died without
leaving (it stops counting within that time instead of channels-redis' group_expiry, a day).
"""

from __future__ import annotations

import asyncio
import time


async def join_counting(layer, group: str, channel: str, *, fresh_within: float) -> int | None:
    """Add ``channel`` to ``group``; the group's live members, this one included (None: the layer cannot tell)."""
    since = time.time() - fresh_within
    counting = getattr(layer, "group_add_counting", None)
    if counting is not None:
        return await counting(group, channel, since=since)
    await layer.group_add(group, channel)
    groups = getattr(layer, "groups", None)  # channels' InMemoryChannelLayer: group -> {channel: joined at}
    if isinstance(groups, dict):
        return sum(1 for joined in groups.get(group, {}).values() if joined >= since)
    return None


async def leave(layer, group: str, channel: str, *, timeout: float = 1.0) -> None:
    """
    Remove ``channel`` from ``group``: with the Redis layer in one batch with the other leaves of the same turn of
    the loop (``BatchingRedisChannelLayer.group_discard_batched``: a server that stops has every socket leave at once),
    bounded by Redis' time, not by a busy loop's; with another layer, for at most ``timeout`` seconds.
    """
    batched = getattr(layer, "group_discard_batched", None)
    if batched is not None:
        await batched(group, channel)
    else:
        await asyncio.wait_for(layer.group_discard(group, channel), timeout)
