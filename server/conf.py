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
}


def server_setting(name: str) -> Any:
    """``settings.SERVER[name]``, or its documented default."""
    configured = getattr(settings, "SERVER", None)
    if configured is not None and name in configured:
        return configured[name]
    return DEFAULTS[name]
