"""The pool, plus the channels-redis pub/sub layer (one PUBLISH per group send)."""

from variants.pool import *  # noqa: F401,F403
from variants.pool import REDIS_URL

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}
