"""
ASGI entry point: HTTP through Django, WebSockets through Channels (JWT auth, Origin check).

Run with ``daphne notifications_site.asgi:application``. Wiring only: the third-party patches are
applied by ``ServerConfig.ready()`` during ``django.setup()`` (server/patches).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifications_site.settings")

# Set up Django (apps, models) before anything imports models (as django.core.asgi does).
django.setup(set_prefix=False)

from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from server import gc_policy  # noqa: E402
from server.conf import server_setting  # noqa: E402
from server.http import PooledASGIHandler  # noqa: E402

# Each request in one pooled thread (server/http.py); 0: Django's thread per request.
http_threads = server_setting("HTTP_THREADS")
django_asgi_app = PooledASGIHandler(http_threads) if http_threads else ASGIHandler()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from realtime import publisher  # noqa: E402
from realtime.asgi import inbox_websocket  # noqa: E402

# Here, not in ServerConfig.ready(): the collector policy is for the long-lived server process that
# imports this module (daphne, uvicorn), not for management commands, the shell or migrations.
gc_policy.install_from_settings()

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The helper a host project uses too (realtime/asgi.py); this service's sockets take tokens only.
        "websocket": inbox_websocket(session=False),
    }
)


async def application(scope, receive, send):
    # Fan-out sends from this server's event loop (see realtime.publisher).
    publisher.bind_loop()
    return await router(scope, receive, send)
