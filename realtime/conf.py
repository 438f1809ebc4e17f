"""
The WebSocket backend's settings: one ``REALTIME`` dict in the Django settings, every key optional.

``realtime_setting("SEND_TIMEOUT")`` is the one way realtime/ reads them (as ``inbox.conf.inbox_setting``
is the domain's). The domain's own limits (ids per frame, catch-up sizes) are read through
``inbox_setting``. notifications_site/settings/realtime.py fills the dict from the environment.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # --- Client frames (what an operator may change on day one) ---
    # A client frame larger than this (in bytes) closes the socket with 1009.
    "MAX_FRAME_BYTES": 64 * 1024,
    # A token bucket per socket for client frames: this many a second, bursts of up to FRAME_BURST.
    "FRAME_RATE": 20.0,
    "FRAME_BURST": 60,
    # Frames refused in a row before the socket is closed with 4429.
    "FRAME_ABUSE_CLOSE": 100,
    # Open sockets per user, counted across server processes by the channel layer; one more is
    # closed with 4408 right after it opens. 0: no cap.
    "MAX_SOCKETS_PER_USER": 50,
    # Sockets of one server process that join, read the database and catch up at the same time;
    # the others wait their turn, open (realtime/admission.py). 0: no limit.
    "CONNECT_CONCURRENCY": 16,
    # Seconds a socket waits for that turn at most; then it is closed with 1013 (try again later).
    "CONNECT_QUEUE_SECONDS": 10.0,
    # --- The channel layer ---
    # A fan-out batch (or a group join) that Redis does not take within this many seconds is given
    # up and logged; clients recover it by catch-up.
    "SEND_TIMEOUT": 2.0,
    # Seconds between a socket's re-joins of its group (channels-redis' group_expiry is 86400 s).
    "GROUP_REFRESH_SECONDS": 3600,
    # Seconds between checks that Redis still holds the groups; sockets are closed (1012) when it
    # failed or lost them (realtime/watchdog.py).
    "LAYER_CHECK_SECONDS": 1.0,
    # --- Tuning (docs/performance.md) ---
    # Events a server process queues for the layer at most; past it the oldest are dropped (logged)
    # and clients catch up (realtime/publisher.py).
    "MAX_PENDING_EVENTS": 100_000,
}


def realtime_setting(name: str) -> Any:
    """``settings.REALTIME[name]``, or its documented default."""
    configured = getattr(settings, "REALTIME", None)
    if configured is not None and name in configured:
        return configured[name]
    return DEFAULTS[name]
