"""The server process' plumbing: the SERVER dict (server/conf.py has every key's default and meaning)."""

from ..env import env_bool, env_float, env_int

SERVER = {
    # HTTP requests run in a fixed pool of this many threads (server/http.py); 0: Django's stock
    # ASGIHandler (a new thread per request). Below DATABASE_POOL_MAX, so a request never waits for
    # a connection and the WebSocket consumers' queries keep a few.
    "HTTP_THREADS": env_int("INBOX_HTTP_THREADS", 12),
    # After each full collection what survived it is frozen, so the next ones walk only what is new;
    # undone when the frozen objects grew by GC_FREEZE_GROWTH or after GC_FULL_EVERY_SECONDS
    # (server/gc_policy.py).
    "GC_FREEZE": env_bool("INBOX_GC_FREEZE", True),
    "GC_FREEZE_GROWTH": env_float("INBOX_GC_FREEZE_GROWTH", 0.25),
    "GC_FULL_EVERY_SECONDS": env_float("INBOX_GC_FULL_EVERY_SECONDS", 600.0),
}
