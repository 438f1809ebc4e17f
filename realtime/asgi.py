"""
The WebSocket half of Inbox as one ASGI application, for the service's router and a host's alike.

A host project puts it in its own router::

    from channels.routing import ProtocolTypeRouter
    from django.core.asgi import get_asgi_application

    django_asgi_app = get_asgi_application()  # first: it sets Django up

    from realtime.asgi import inbox_websocket

    application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": inbox_websocket()})

``inbox_websocket()`` is the Origin check (realtime/origin.py: ALLOWED_HOSTS and
INBOX["ALLOWED_ORIGINS"]), then the socket's turn to connect (realtime/admission.py: a few at a
time per process), then authentication, then the route (realtime/routing.py):

- a token on the handshake (the ``["bearer", "<access>"]`` subprotocol pair or ``?token=``) is
  checked by realtime/auth.py: Inbox's own JWTs, the host's simplejwt tokens (same signing key), and
  tokens of INBOX["TRUSTED_ISSUERS"]; a bad one closes the socket with 4401, whatever the cookies;
- without one, the host's own session cookie (channels' ``AuthMiddlewareStack``, the user
  ``django.contrib.auth`` signed in), when ``session`` is true (the default when
  ``django.contrib.sessions`` is installed). The Origin check is what keeps a foreign page from
  riding on that cookie;
- a user an outer middleware of the host already put in ``scope["user"]`` is taken as it is.

The service itself serves ``inbox_websocket(session=False)``: its sockets take tokens only
(tests/hardening/test_websocket_abuse.py).
"""

from __future__ import annotations

from django.apps import apps
from channels.routing import URLRouter

from . import publisher
from .admission import ConnectGate
from .auth import JWTAuthMiddleware, token_from_scope
from .origin import AllowedHostsOriginValidator
from .routing import websocket_urls


class TokenOrSessionAuthMiddleware:
    """Authenticates a socket by its token if it carries one, else by the session cookie (or not at all)."""

    def __init__(self, inner, *, session: bool) -> None:
        self.inner = inner
        self.by_token = JWTAuthMiddleware(inner)
        if session:
            from channels.auth import AuthMiddlewareStack

            self.by_session = AuthMiddlewareStack(inner)
        else:
            self.by_session = self.by_token  # no token: JWTAuthMiddleware sets AnonymousUser, the consumer closes 4401

    async def __call__(self, scope, receive, send):
        if token_from_scope(scope):
            return await self.by_token(scope, receive, send)
        user = scope.get("user")
        if user is not None and getattr(user, "is_authenticated", False):
            return await self.inner(scope, receive, send)  # the host's own middleware decided
        return await self.by_session(scope, receive, send)


def inbox_websocket(*, prefix: str = "", session: bool | None = None, urlpatterns: list | None = None):
    """
    The ASGI application of Inbox's socket at ``/<prefix>ws/notifications/``: Origin check,
    authentication (a token, else the session cookie when ``session``), the route. ``session``
    None: on when ``django.contrib.sessions`` is installed. ``urlpatterns`` replaces the route.
    Call it after Django is set up (after ``get_asgi_application()``).
    """
    if session is None:
        session = apps.is_installed("django.contrib.sessions")
    routes = urlpatterns if urlpatterns is not None else websocket_urls(prefix)
    app = AllowedHostsOriginValidator(ConnectGate(TokenOrSessionAuthMiddleware(URLRouter(routes), session=session)))

    async def application(scope, receive, send):
        # Fan-out sends from this server's event loop from now on (realtime/publisher.py).
        publisher.bind_loop()
        return await app(scope, receive, send)

    return application
