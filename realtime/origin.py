"""
Origin check for WebSockets: channels' AllowedHostsOriginValidator, plus the product's web origins
(INBOX["ALLOWED_ORIGINS"], from INBOX_ALLOWED_ORIGINS), and a handshake with no Origin header is
let through.

Browsers always send Origin on a WebSocket handshake, so a foreign Origin (cross-site WebSocket
hijacking) is still refused: channels' WebsocketDenier closes the handshake before accepting it,
which the server answers with an HTTP 403 (no WebSocket is opened, so there is no close code).
A client without Origin is not a browser (a mobile app, a backend worker); it cannot ride on
anyone's cookies and must present its own JWT like everyone else.

An origin of ALLOWED_HOSTS matches by host name (any scheme and port, as channels does); an origin
of ALLOWED_ORIGINS matches exactly: its scheme, host and port (https://app.example.com is not
http://app.example.com nor https://app.example.com:8443). The lists are read at each handshake,
so a test's or a host's settings change applies at once.
"""

from urllib.parse import urlparse

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings

from inbox.conf import inbox_setting

DEBUG_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


def allowed_origins() -> list[str]:
    """The patterns a WebSocket's Origin may match: ALLOWED_HOSTS, then the product's web origins."""
    hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not hosts:
        hosts = list(DEBUG_HOSTS)
    return hosts + [origin for origin in inbox_setting("ALLOWED_ORIGINS") or [] if origin != "*"]


class BrowserOriginValidator(OriginValidator):
    def __init__(self, application, allowed_origins=None):
        # None: read the settings at each handshake (allowed_origins()).
        super().__init__(application, allowed_origins)

    async def __call__(self, scope, receive, send):
        # channels parses the Origin with urlparse and reads its port: "https://[::1" or
        # "https://a.example:99999" raised ValueError out of the handshake. Refused like a foreign one.
        if scope.get("type") == "websocket":
            for name, value in scope.get("headers", []):
                if name == b"origin":
                    try:
                        urlparse(value.decode("latin1")).port  # noqa: B018
                    except ValueError:
                        return await WebsocketDenier()(scope, receive, send)
        return await super().__call__(scope, receive, send)

    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)

    def validate_origin(self, parsed_origin):
        patterns = self.allowed_origins if self.allowed_origins is not None else allowed_origins()
        return any(pattern == "*" or self.match_allowed_origin(parsed_origin, pattern) for pattern in patterns)


def AllowedHostsOriginValidator(application):
    return BrowserOriginValidator(application)
