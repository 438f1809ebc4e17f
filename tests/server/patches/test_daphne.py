"""
daphne's requests skip Twisted's parsing of form bodies, which daphne never reads, and its text
frames are written directly (server/patches/daphne.py).
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from daphne.http_protocol import WebRequest
from twisted.web import http

from server.patches.daphne import direct_text_frames, skip_twisted_form_parsing

from .support import read_exactly


def a_request() -> WebRequest:
    server = SimpleNamespace(protocol_connected=lambda request: None)
    channel = SimpleNamespace(getPeer=lambda: None, getHost=lambda: None, transport=None, factory=SimpleNamespace(server=server))
    return WebRequest(channel)


def test_a_daphne_request_does_not_parse_a_form_post_and_keeps_its_body(monkeypatch):
    skip_twisted_form_parsing()
    skip_twisted_form_parsing()  # twice is harmless

    def refuse(line):
        raise AssertionError(f"Twisted parsed the Content-Type {line!r}")

    monkeypatch.setattr(http, "_parseContentType", refuse)
    request = a_request()
    processed = []
    monkeypatch.setattr(request, "process", lambda: processed.append(True))
    body = b"recipient=alice&title=hello"
    request.requestHeaders.setRawHeaders(b"Content-Type", [b"application/x-www-form-urlencoded"])
    request.requestHeaders.setRawHeaders(b"Content-Length", [str(len(body)).encode()])
    request.content = io.BytesIO()
    request.content.write(body)  # as Twisted's handleContentChunk does
    request.requestReceived(b"POST", b"/api/notifications/", b"HTTP/1.1")

    assert processed == [True]
    assert request.args == {}
    assert request.content.read() == body


def test_without_the_patch_twisted_would_parse_it(monkeypatch):
    # The check above can fail: an unpatched Twisted request does call the parser.
    seen = []
    monkeypatch.setattr(http, "_parseContentType", lambda line: seen.append(line) or b"application/x-www-form-urlencoded")
    channel = SimpleNamespace(getPeer=lambda: None, getHost=lambda: None, transport=None)
    request = http.Request(channel)
    monkeypatch.setattr(request, "process", lambda: None)
    body = b"a=1"
    request.requestHeaders.setRawHeaders(b"Content-Type", [b"application/x-www-form-urlencoded"])
    request.requestHeaders.setRawHeaders(b"Content-Length", [b"3"])
    request.content = io.BytesIO()
    request.content.write(body)  # as Twisted's handleContentChunk does
    request.requestReceived(b"POST", b"/", b"HTTP/1.1")
    assert seen == [b"application/x-www-form-urlencoded"]
    assert request.args == {b"a": [b"1"]}


def an_open_socket(**options):
    """A daphne WebSocket protocol past its handshake, writing to a recording transport."""
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
    from twisted.internet.testing import StringTransport

    factory = WebSocketFactory(SimpleNamespace())
    factory.setProtocolOptions(maxMessagePayloadSize=2**20, **options)  # daphne's default limit
    protocol = factory.buildProtocol(("127.0.0.1", 40000))
    protocol.makeConnection(StringTransport())
    protocol.state = WebSocketProtocol.STATE_OPEN
    protocol._perMessageCompress = None
    protocol.client_addr = ("127.0.0.1", 40000)
    return protocol


def autobahn_refused(protocol) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("went through autobahn's sendMessage")

    protocol.sendMessage = refuse


TEXTS = ["x", "é" * 62 + "x", "a" * 125, "a" * 126, "ü" * 40_000, "a" * 65_535, "a" * 65_536, '{"type":"pong"}']


@pytest.mark.parametrize("text", TEXTS, ids=lambda t: f"{len(t.encode())}-bytes")
def test_a_text_message_is_the_frame_autobahn_writes_and_counts_the_same_traffic(text):
    direct_text_frames()
    ours, theirs = an_open_socket(), an_open_socket()
    autobahn_refused(ours)

    ours.handle_reply({"type": "websocket.send", "text": text})
    theirs.sendMessage(text.encode("utf8"), False)  # autobahn's own path, as daphne called it

    assert ours.transport.value() == theirs.transport.value()
    assert ours.transport.value()[:1] == b"\x81"  # FIN, text
    assert vars(ours.trafficStats) == vars(theirs.trafficStats)


@pytest.mark.parametrize(
    "how",
    ["binary", "compression", "payload over the limit", "auto-fragmented", "a chopped write queued", "not open"],
)
def test_anything_else_goes_through_autobahn_as_before(how):
    from daphne.ws_protocol import WebSocketProtocol

    direct_text_frames()
    protocol = an_open_socket(autoFragmentSize=100 if how == "auto-fragmented" else 0)
    message = {"type": "websocket.send", "text": "a" * 200}
    if how == "binary":
        message = {"type": "websocket.send", "bytes": b"a" * 200}
    elif how == "compression":
        protocol._perMessageCompress = object()
    elif how == "payload over the limit":
        protocol.maxMessagePayloadSize = 100
    elif how == "a chopped write queued":
        protocol.send_queue.append((b"earlier", True))
    elif how == "not open":
        protocol.state = WebSocketProtocol.STATE_CLOSING
    calls = []
    protocol.sendMessage = lambda payload, binary, *args, **kwargs: calls.append((payload, binary))

    protocol.handle_reply(message)

    assert calls == [(b"a" * 200, how == "binary")]
    assert protocol.transport.value() == b""


def test_a_large_frame_sent_directly_reaches_a_peer_whole(connection):
    # Through a real TCP connection (write_through_tcp), as in the server: header and payload together.
    conn, peer, _ = connection
    direct_text_frames()
    protocol = an_open_socket()
    protocol.transport = conn
    protocol.handle_reply({"type": "websocket.send", "text": "z" * 70_000})
    assert read_exactly(peer, 10 + 70_000) == b"\x81\x7f" + (70_000).to_bytes(8, "big") + b"z" * 70_000


def test_daphnes_timeout_check_of_a_request_within_its_time_runs_daphnes_own_check():
    # bound_request_bodies wraps check_timeouts; a request in time gets daphne's own check, once.
    from server.patches.daphne import bound_request_bodies

    bound_request_bodies()
    server = SimpleNamespace(protocol_connected=lambda request: None, http_timeout=None)
    channel = SimpleNamespace(getPeer=lambda: None, getHost=lambda: None, transport=None, factory=SimpleNamespace(server=server))
    request = WebRequest(channel)
    request.check_timeouts()  # within REQUEST_READ_TIMEOUT_SECONDS: nothing happens, nothing raises
    assert request._body_refused is False


def test_unsent_bytes_counts_what_twisted_still_holds_for_a_connection(connection):
    from server.patches.twisted import unsent_bytes

    conn, peer, reactor = connection
    assert unsent_bytes(conn) == 0
    big = b"x" * 10_000_000  # more than the socket buffers hold
    conn.write(big)
    held = unsent_bytes(conn)
    assert 0 < held <= len(big)
    conn.write(b"more")
    assert unsent_bytes(conn) == held + 4
    assert unsent_bytes(SimpleNamespace(transport=conn)) == held + 4  # through a wrapping transport (TLS)
    assert unsent_bytes(object()) == 0
