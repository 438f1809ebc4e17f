"""
daphne's requests skip Twisted's parsing of form bodies, which daphne never reads, and Twisted's TCP
connections send a write at once when nothing waits to be sent (realtime/daphne_compat).
"""

from __future__ import annotations

import io
import socket
from types import SimpleNamespace

import pytest
from daphne.http_protocol import WebRequest
from twisted.web import http

from realtime.daphne_compat import direct_text_frames, skip_discarded_access_log, skip_twisted_form_parsing, write_through_tcp


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


class RecordingReactor:
    """What a Twisted connection asks of its reactor: here, only whether it waits to write."""

    def __init__(self) -> None:
        self.writers: list = []

    def addWriter(self, writer) -> None:
        if writer not in self.writers:  # as Twisted's reactors do
            self.writers.append(writer)

    def removeWriter(self, writer) -> None:
        self.writers.remove(writer)

    def addReader(self, reader) -> None:
        pass

    def removeReader(self, reader) -> None:
        pass


@pytest.fixture
def connection():
    from twisted.internet import tcp

    write_through_tcp()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(2)
    reactor = RecordingReactor()
    conn = tcp.Connection(ours, protocol=None, reactor=reactor)
    conn.connected = True
    yield conn, theirs, reactor
    ours.close()
    theirs.close()


def read_exactly(sock, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        got += sock.recv(size - len(got))
    return bytes(got)


def test_a_write_with_nothing_waiting_is_sent_at_once_without_asking_the_reactor(connection):
    conn, peer, reactor = connection
    conn.write(b"frame one")
    conn.write(b"frame two")
    assert read_exactly(peer, 18) == b"frame oneframe two"
    assert reactor.writers == []
    assert conn._tempDataLen == 0


def test_what_the_kernel_does_not_take_is_buffered_and_later_writes_queue_behind_it(connection):
    conn, peer, reactor = connection
    big = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers hold
    conn.write(big)
    assert reactor.writers == [conn]  # the rest waits for the socket to be writable
    conn.write(b"after")  # must not overtake the buffered bytes
    assert reactor.writers == [conn]
    received = bytearray()
    while len(received) < len(big) + 5:
        conn.doWrite()  # what the reactor does when the socket is writable
        received += peer.recv(1 << 20)
    assert bytes(received) == big + b"after"
    assert reactor.writers == []


def test_a_write_to_a_lost_connection_goes_through_twisteds_buffered_path(connection):
    conn, peer, reactor = connection
    peer.close()
    conn.write(b"x" * 100)  # may still be taken by the kernel
    for _ in range(3):
        conn.write(b"y" * 1_000_000)
        if reactor.writers:
            break
    # The error is left to Twisted's doWrite, which reports the lost connection.
    assert reactor.writers == [conn]
    assert conn.doWrite() is not None


def test_autobahn_builds_a_debug_log_label_only_when_the_message_is_written(monkeypatch):
    import click
    from autobahn import util
    from autobahn.twisted import websocket as twisted_websocket
    from autobahn.websocket import protocol

    from realtime.daphne_compat import lazy_autobahn_log_labels

    lazy_autobahn_log_labels()
    lazy_autobahn_log_labels()  # twice is harmless

    class Peer:
        def sendData(self):
            pass

    peer = Peer()
    expected = "{func} sent {n} bytes for {peer}".format(
        func=util.hltype(peer.sendData), n=util.hlval(42), peer=util.hlval("tcp:127.0.0.1:1", color="green")
    )
    styled = []
    real_style = click.style
    monkeypatch.setattr(click, "style", lambda *a, **k: styled.append(a) or real_style(*a, **k))
    for module in (protocol, twisted_websocket):
        labels = dict(func=module.hltype(peer.sendData), n=module.hlval(42), peer=module.hlval("tcp:127.0.0.1:1", color="green"))
        assert styled == []  # built, not formatted: a dropped debug message costs no colouring
        assert "{func} sent {n} bytes for {peer}".format(**labels) == expected
        assert styled
        styled.clear()


def _factory_logging_to(verbosity: int):
    from daphne.http_protocol import HTTPFactory

    factory = HTTPFactory(SimpleNamespace(verbosity=verbosity))
    written = io.StringIO()
    factory._logFile = written  # what Twisted's log would get
    return factory, written


def _finished_request() -> http.Request:
    channel = SimpleNamespace(getPeer=lambda: None, getHost=lambda: None, transport=None)
    request = http.Request(channel)
    request.method, request.uri, request.clientproto, request.code, request.sentLength = b"POST", b"/api/notifications/", b"HTTP/1.1", 201, 2
    request.getClientAddress = lambda: SimpleNamespace(host="127.0.0.1")
    return request


def test_at_verbosity_0_and_1_no_access_line_is_formatted():
    skip_discarded_access_log()
    skip_discarded_access_log()  # twice is harmless
    for verbosity in (0, 1):
        factory, written = _factory_logging_to(verbosity)
        factory.log(object())  # returns before looking at the request at all
        assert written.getvalue() == ""


def test_at_verbosity_2_the_access_line_is_written_as_before():
    skip_discarded_access_log()
    factory, written = _factory_logging_to(2)
    factory.log(_finished_request())
    assert '"POST /api/notifications/ HTTP/1.1" 201 2' in written.getvalue()


# --- Text frames written directly (direct_text_frames) ------------------------------------------


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
