"""
The WebSocket route. ``websocket_urlpatterns`` is for a host that composes its own ASGI router
(put it inside its own auth middleware and Origin check); ``realtime.asgi.inbox_websocket`` wraps it
with Inbox's. ``websocket_urls(prefix)`` gives the same route under a prefix (``"inbox/"``: the socket
at ``/inbox/ws/notifications/``).
"""

from django.urls import path

from .consumers import NotificationConsumer


def websocket_urls(prefix: str = "") -> list:
    """The notification socket's route at ``<prefix>ws/notifications/`` (a prefix ends with "/")."""
    if prefix and not prefix.endswith("/"):
        raise ValueError(f"A WebSocket route prefix ends with '/': {prefix!r}")
    return [path(f"{prefix.lstrip('/')}ws/notifications/", NotificationConsumer.as_asgi())]


websocket_urlpatterns = websocket_urls()
