"""
The pool, and the sync-only middleware moved to the bottom of the chain: Django then runs every
MiddlewareMixin middleware in sync mode in the request thread, instead of hopping to a thread for
each process_request/process_response hook (MiddlewareMixin.__acall__ uses sync_to_async).
"""

from variants.pool import *  # noqa: F401,F403
from variants.pool import MIDDLEWARE

SYNC_ONLY = [
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "inbox.middleware.BodySizeLimitMiddleware",
    "inbox.middleware.DatabaseUnavailableMiddleware",
]
MIDDLEWARE = [m for m in MIDDLEWARE if m not in SYNC_ONLY] + SYNC_ONLY
