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
    # What one client may make the server hold (server/patches): a WebSocket's unsent bytes (past
    # it: 1008), its protocol pings (the same budget as REALTIME's client frames by default), the
    # time a request's head and body may take to arrive (past it: 408).
    "WEBSOCKET_MAX_UNSENT_BYTES": env_int("INBOX_WEBSOCKET_MAX_UNSENT_BYTES", 4 * 1024 * 1024),
    "WEBSOCKET_PING_RATE": env_float("INBOX_WEBSOCKET_PING_RATE", env_float("REALTIME_FRAME_RATE", 20.0)),
    "WEBSOCKET_PING_BURST": env_int("INBOX_WEBSOCKET_PING_BURST", env_int("REALTIME_FRAME_BURST", 60)),
    "REQUEST_READ_TIMEOUT_SECONDS": env_float("INBOX_REQUEST_READ_TIMEOUT_SECONDS", 30.0),
}
