"""
Origin check for WebSockets: channels' AllowedHostsOriginValidator, except that a handshake with
no Origin header is let through.

Browsers always send Origin on a WebSocket handshake, so a foreign Origin (cross-site WebSocket
hijacking) is still refused. A client without Origin is not a browser (a mobile app, a backend
worker); it cannot ride on anyone's cookies and must present its own JWT like everyone else.
"""

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def AllowedHostsOriginValidator(application):
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
