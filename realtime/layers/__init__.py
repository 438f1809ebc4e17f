"""
The channel layer: ``BatchingRedisChannelLayer`` (redis.py), the Lua scripts it runs (scripts.py),
its bounded Redis replies (replies.py) and the channels-redis internals it leans on (compat.py).
Settings name it ``realtime.layers.BatchingRedisChannelLayer``.
"""

from .redis import BatchingRedisChannelLayer

__all__ = ["BatchingRedisChannelLayer"]
