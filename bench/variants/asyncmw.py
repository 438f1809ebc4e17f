"""
The pool, and no sync-only middleware: measures what a fully async-capable middleware chain would
save (one thread hop per request instead of sync -> async -> sync).
"""

from variants.pool import *  # noqa: F401,F403
from variants.pool import MIDDLEWARE

SYNC_ONLY = {
    "inbox.middleware.BodySizeLimitMiddleware",
    "inbox.middleware.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
}
MIDDLEWARE = [m for m in MIDDLEWARE if m not in SYNC_ONLY]
