"""
The server process' settings: one ``SERVER`` dict in the Django settings, every key optional.

``server_setting("HTTP_THREADS")`` is the one way this package reads them, as ``inbox_setting``
is for the domain. All of them are tuning (docs/performance.md): an operator need not set any.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # HTTP requests run in a fixed pool of this many threads per process (server/http.py); keep it
    # below DATABASE_POOL_MAX. 0: Django's own ASGIHandler (a new thread per request).
    "HTTP_THREADS": 12,
    # After each full garbage collection what survived it is frozen, so later ones walk only what
    # is new instead of every open socket (server/gc_policy.py; bench/JOURNAL.md, findings 25, 29).
    "GC_FREEZE": True,
    # The freeze is undone (the next full collection walks everything and finds dead cycles) when
    # the frozen objects still alive grew by this fraction ...
    "GC_FREEZE_GROWTH": 0.25,
    # ... or after this many seconds.
    "GC_FULL_EVERY_SECONDS": 600.0,
    # --- Limits of what one client may make the server hold (server/patches) ---
    # A WebSocket whose unsent bytes (written by the server, not yet taken by the client's TCP
    # connection) pass this is closed with 1008; the client reconnects and catches up. 0: no limit.
    "WEBSOCKET_MAX_UNSENT_BYTES": 4 * 1024 * 1024,
    # ... and is then given this many seconds to take what was queued and the close frame before
    # its connection is dropped (autobahn's closing handshake timeout is 1 s: a client that read
    # a megabyte slower than that, or a starved server, saw 1006 instead of 1008).
    "WEBSOCKET_POLICY_CLOSE_DRAIN_SECONDS": 10.0,
    # Protocol-level pings a socket may send: this many a second, in bursts of up to
    # WEBSOCKET_PING_BURST (the size of REALTIME's frame budget); past it the socket is closed
    # with 1008. 0: no limit.
    "WEBSOCKET_PING_RATE": 20.0,
    "WEBSOCKET_PING_BURST": 60,
    # An HTTP request's head and body must arrive within this many seconds of its first line, or it
    # is answered 408 and its connection closed. A body declared larger than Django's
    # DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 before a byte of it is read. 0: no timeout.
    "REQUEST_READ_TIMEOUT_SECONDS": 30.0,
}


def server_setting(name: str) -> Any:
    """``settings.SERVER[name]``, or its documented default."""
    configured = getattr(settings, "SERVER", None)
    if configured is not None and name in configured:
        return configured[name]
    return DEFAULTS[name]
