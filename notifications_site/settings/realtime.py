"""The WebSocket side: the channel layer and the REALTIME dict (realtime/conf.py has every key's default)."""

import os

from ..env import env_float, env_int

REDIS_URL = os.environ.get("REDIS_URL", "")
# Several Redis servers: channels-redis spreads groups and channels over them by consistent hashing
# (every server process must list the same URLs in the same order). REDIS_URLS wins over REDIS_URL.
REDIS_URLS = [u.strip() for u in os.environ.get("REDIS_URLS", "").split(",") if u.strip()] or ([REDIS_URL] if REDIS_URL else [])
if REDIS_URLS:
    CHANNEL_LAYERS = {
        "default": {
            # RedisChannelLayer plus one pipelined call for many groups (realtime/layers/redis.py).
            "BACKEND": "realtime.layers.BatchingRedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": url,
                        # Fail fast when Redis hangs; the database is the record of truth.
                        "socket_timeout": env_float("REDIS_SOCKET_TIMEOUT", 2.0),
                        "socket_connect_timeout": env_float("REDIS_CONNECT_TIMEOUT", 2.0),
                        "max_connections": env_int("REDIS_MAX_CONNECTIONS", 2000),
                    }
                    for url in REDIS_URLS
                ],
                # A per-socket buffer: a burst larger than this is dropped by the layer and
                # recovered by the client's catch-up.
                # https://channels.readthedocs.io/en/stable/channel_layer_spec.html#capacity
                # Every socket of a process shares one channel key, so this bounds a process's
                # backlog, not a socket's: it must hold the largest fan-out (a broadcast).
                "capacity": env_int("CHANNEL_CAPACITY", 100_000),
                "expiry": 60,
                # Sockets re-add themselves to their group well before this (realtime.consumers).
                "group_expiry": 86400,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


# Every key is optional (defaults and meaning in realtime/conf.py); these read the environment.
REALTIME = {
    "SEND_TIMEOUT": env_float("REALTIME_SEND_TIMEOUT", 2.0),
    "MAX_FRAME_BYTES": env_int("REALTIME_MAX_FRAME_BYTES", 64 * 1024),
    "FRAME_RATE": env_float("REALTIME_FRAME_RATE", 20.0),
    "FRAME_BURST": env_int("REALTIME_FRAME_BURST", 60),
    "FRAME_ABUSE_CLOSE": env_int("REALTIME_FRAME_ABUSE_CLOSE", 100),
    "MAX_SOCKETS_PER_USER": env_int("REALTIME_MAX_SOCKETS_PER_USER", 50),
    "CONNECT_CONCURRENCY": env_int("REALTIME_CONNECT_CONCURRENCY", 16),
    "CONNECT_QUEUE_SECONDS": env_float("REALTIME_CONNECT_QUEUE_SECONDS", 10.0),
    "GROUP_REFRESH_SECONDS": env_int("REALTIME_GROUP_REFRESH_SECONDS", 3600),
    "LAYER_CHECK_SECONDS": env_float("REALTIME_LAYER_CHECK_SECONDS", 1.0),
    "MAX_PENDING_EVENTS": env_int("REALTIME_MAX_PENDING_EVENTS", 100_000),
}
