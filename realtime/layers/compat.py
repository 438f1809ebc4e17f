"""
Every channels-redis internal the layer (and the watchdog) leans on, in one place, and the versions
they were checked against.

BatchingRedisChannelLayer subclasses ``channels_redis.core.RedisChannelLayer`` and reads what that
class does not document as its API. A channels-redis release may move any of it (4.2.1 moved
encryption into the serializer), so the layer refuses to start outside ``SUPPORTED``: re-read each
item below against the new release, then widen the range.

Attributes and methods of ``RedisChannelLayer`` (channels_redis/core.py):
- ``_serializer`` (its ``as_bytes``, ``crypter``, ``random_prefix_length``; ``type()`` compared with
  ``channels_redis.serializers.MsgPackSerializer``): whether SEND_LUA may write entries itself.
- ``ring_size``, ``hosts`` (the decoded host dicts, ``socket_timeout`` read), ``consistent_hash(value)``,
  ``connection(index)``: the shards, and a pooled client of each (also the watchdog's). The watchdog
  hashes each socket's group and process key (channels' ``non_local_name(channel)``, BaseChannelLayer's
  API) with ``consistent_hash`` to close only the sockets of a lost shard.
- ``channel_capacity`` (compiled per-channel capacities), ``capacity``, ``get_capacity(channel)``,
  ``expiry``, ``group_expiry``, ``prefix``.
- ``_group_key(group)``: a group's key.
- ``brpop_timeout`` (class attribute, 5 s): how long the pump's BZPOPMIN blocks; lowered below the
  hosts' ``socket_timeout``.
- ``serialize`` / ``deserialize``, and ``receive`` for channels that are not process channels.
``channels_redis.utils.create_pool(host)``: the pool of the layer's patient clients.

The Redis format the layer re-creates in Lua (realtime/layers/scripts.py) and in ``group_send_many``:
- a group is the sorted set ``<prefix>:group:<group>`` of channel names scored by the time they
  joined; members older than ``group_expiry`` are dropped;
- a channel is the sorted set ``<prefix><channel>`` of entries scored by the time they were sent,
  expiring after ``expiry``; the sockets of a process share the key of their process channel
  (the name up to and including ``!``, as ``non_local_name`` gives it);
- an entry is ``random_prefix_length`` random bytes followed by the message in msgpack; a group
  send's message names its channels in ``__asgi_channel__``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.metadata import version

from channels_redis.core import RedisChannelLayer
from channels_redis.serializers import MsgPackSerializer
from channels_redis.utils import create_pool
from django.core.exceptions import ImproperlyConfigured

__all__ = ["SUPPORTED", "MsgPackSerializer", "RedisChannelLayer", "check_channels_redis", "create_pool", "installed_version"]

#: channels-redis releases the internals above were checked against: (lowest, first refused) minor.
SUPPORTED = ((4, 3), (4, 4))


@lru_cache(maxsize=1)
def installed_version() -> str:
    return version("channels-redis")


def check_channels_redis(installed: str | None = None) -> None:
    """Raise ImproperlyConfigured unless ``installed`` (default: the installed channels-redis) is supported."""
    installed = installed_version() if installed is None else installed
    match = re.match(r"(\d+)\.(\d+)", installed)
    low, high = SUPPORTED
    if match is None or not low <= (int(match[1]), int(match[2])) < high:
        raise ImproperlyConfigured(
            f"realtime.layers.BatchingRedisChannelLayer leans on channels-redis internals checked against "
            f"channels-redis {low[0]}.{low[1]}.x; channels-redis {installed} is installed. Re-check the "
            f"internals listed in realtime/layers/compat.py against it and widen SUPPORTED there, or install "
            f"channels-redis {low[0]}.{low[1]}.x."
        )
