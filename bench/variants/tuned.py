"""Everything measured to help so far: pool + sync-only middleware at the bottom + pub/sub layer."""

from variants.syncchain import *  # noqa: F401,F403
from variants.pubsub import CHANNEL_LAYERS  # noqa: F401
