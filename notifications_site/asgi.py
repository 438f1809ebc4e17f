"""
ASGI entry point: HTTP through Django, WebSockets through Channels (JWT auth, Origin check).

Run with ``daphne notifications_site.asgi:application``.
"""

import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifications_site.settings")

# Set up Django (apps, models) before anything imports models (as django.core.asgi does).
django.setup(set_prefix=False)

from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from notifications_site import gc_policy  # noqa: E402
from notifications_site.http import PooledASGIHandler  # noqa: E402
from notifications_site.uvicorn_compat import coalesce_response_head  # noqa: E402

# Each request in one pooled thread (notifications_site/http.py); 0: Django's thread per request.
django_asgi_app = PooledASGIHandler(settings.HTTP_THREADS) if settings.HTTP_THREADS else ASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from realtime import fanout  # noqa: E402
from realtime.daphne_compat import (  # noqa: E402
    allow_standard_close_codes,
    direct_text_frames,
    exit_promptly_after_shutdown,
    lazy_autobahn_log_labels,
    skip_discarded_access_log,
    skip_twisted_form_parsing,
    write_through_tcp,
)
from realtime.auth import JWTAuthMiddlewareStack  # noqa: E402
from realtime.origin import AllowedHostsOriginValidator  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

# daphne refuses to send 1009/1011/1012 without this (realtime/daphne_compat.py).
allow_standard_close_codes()
# ... and hangs on SIGTERM under load without this (realtime/daphne_compat.py).
exit_promptly_after_shutdown()
# ... and parses POST bodies it never uses without this (realtime/daphne_compat.py).
skip_twisted_form_parsing()
# ... and registers every socket with the selector for every frame it sends without this.
write_through_tcp()
# ... and colours a debug-log label for every frame it sends or reads, logged or not, without this.
lazy_autobahn_log_labels()
# ... and formats an access-log line for every request that its verbosity (0, 1) drops, without this.
skip_discarded_access_log()
# ... and builds every text frame through autobahn's general send path without this.
direct_text_frames()
# uvicorn writes a response's head and body in two calls without this (notifications_site/uvicorn_compat.py).
coalesce_response_head()

# Optional (INBOX_GC_THRESHOLDS, settings.py): fewer garbage collections in the server process.
# What is loaded by now lives as long as the process, so it leaves the collector's generations
# for good (gc.freeze), and the thresholds are the configured ones.
if settings.GC_THRESHOLDS:
    gc.freeze()
    gc.set_threshold(*settings.GC_THRESHOLDS)
# Full collections walk what is new since the last one, not every open socket
# (INBOX_GC_FREEZE, settings.py; notifications_site/gc_policy.py).
if settings.GC_FREEZE_SURVIVORS:
    gc_policy.install(growth=settings.GC_FREEZE_GROWTH, full_every=settings.GC_FULL_EVERY_SECONDS)

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(JWTAuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)


async def application(scope, receive, send):
    # Fan-out sends from this server's event loop (see realtime.fanout).
    fanout.bind_loop()
    return await router(scope, receive, send)
