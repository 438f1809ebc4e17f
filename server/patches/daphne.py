"""Patches of daphne 4.2: close codes, shutdown, form parsing, text frames, client limits (server/patches)."""

from __future__ import annotations

import io
import json
import logging
import sys
import time

from . import patch
from .limits import POLICY_VIOLATION, SERVICE_RESTART, SERVICE_RESTART_REASON, PingBudget

logger = logging.getLogger(__name__)

# RFC 6455 7.4.1 and the IANA registry: codes an endpoint may put in a close frame.
STANDARD_CLOSE_CODES = frozenset({1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


@patch(
    "daphne", ">=4.2,<4.3",
    "daphne refuses to send close codes but 1000 and 3000-4999, so a socket whose channel layer failed stayed "
    "open and deaf (django/daphne#374; docs/reliability.md, Redis kill)",
)
def allow_standard_close_codes() -> None:
    """
    Let daphne send the standard close codes the consumer uses (1009, 1011, 1012).

    daphne turns an ASGI ``websocket.close`` into autobahn's ``sendClose``, which refuses every code
    but 1000 and 3000-4999 (django/daphne#374, crossbario/autobahn-python#1642). The refusal is an
    exception inside the ``send`` of the consumer, so the close frame is never sent: a socket whose
    channel layer failed stayed open and deaf, and an oversized frame got 1011 instead of 1009.
    RFC 6455 section 7.4.1 lets an endpoint send these codes; this sends them as close frames directly.

    It also turns off autobahn's ``failByDrop``: on a frame over daphne's own limit (1 MiB) or a text
    frame of invalid UTF-8, daphne cut the TCP connection without a close frame (the client saw 1006);
    now it sends 1009 or 1007 first, as RFC 6455 section 7.1.7 asks.
    """
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

    original = WebSocketProtocol.serverClose

    def serverClose(self, code=None):
        if code in STANDARD_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code)

    WebSocketProtocol.serverClose = serverClose

    factory_init = WebSocketFactory.__init__

    def __init__(self, *args, **kwargs):
        factory_init(self, *args, **kwargs)
        self.setProtocolOptions(failByDrop=False)

    WebSocketFactory.__init__ = __init__


@patch(
    "daphne", ">=4.2,<4.3",
    "under load daphne never exited after SIGTERM: request threads wait for its stopped event loop "
    "(docs/reliability.md, daphne SIGTERM)",
)
def exit_promptly_after_shutdown() -> bool:
    """
    Under daphne, end the process once the reactor has shut down (SIGTERM, SIGINT).

    A request in flight runs the middleware chain in a worker thread that waits in async_to_sync
    for the view's coroutine on the event loop. daphne stops that loop on SIGTERM, so the thread
    waits forever, and Python's exit waits for the thread: under load the process never exited by
    itself and was killed by the process manager (10 s in the test, 90 s under systemd's default).
    Those requests are lost either way (their clients get a reset and retry, idempotently); the
    process now exits right after daphne's own shutdown instead of hanging.
    """
    if "twisted.internet.reactor" not in sys.modules:
        return False  # not under daphne; importing the reactor here would install the wrong one
    from twisted.internet import reactor

    def _exit() -> None:
        import logging
        import os

        logging.getLogger(__name__).info("daphne has shut down; exiting without waiting for stuck request threads")
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(0)

    reactor.addSystemEventTrigger("after", "shutdown", _exit)
    return True


#: How long a shutdown waits for the clients to answer the close frames before daphne drops them.
CLOSE_GRACE_SECONDS = 1.0


@patch(
    "daphne", ">=4.2,<4.3",
    "daphne's SIGTERM dropped every socket without a close frame: clients saw 1006, not why "
    "(docs/reliability.md, daphne SIGTERM)",
    also={"Twisted": ">=26.10,<26.11"},
)
def close_sockets_on_shutdown() -> None:
    """
    On shutdown (SIGTERM, SIGINT) send every open WebSocket a close frame with 1012 (service
    restart), and give its client up to CLOSE_GRACE_SECONDS to answer, before daphne cancels the
    applications and the reactor drops the connections.

    daphne's ``Server.kill_all_applications`` (its "before shutdown" trigger) only cancels the
    application coroutines; then Twisted disconnects every transport without flushing it, so a
    client saw an abnormal closure (1006) and could not tell a restart from a network failure.
    This runs first in the same trigger and returns a Deferred that Twisted waits for.
    """
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol
    from twisted.internet import defer, reactor, task

    original = Server.kill_all_applications

    def kill_all_applications(self):
        sockets = [p for p in list(self.connections) if isinstance(p, WebSocketProtocol) and p.state == p.STATE_OPEN]
        for protocol in sockets:
            try:
                protocol.sendCloseFrame(code=SERVICE_RESTART, reasonUtf8=SERVICE_RESTART_REASON.encode(), isReply=False)
            except Exception:  # a transport already gone: nothing to tell
                logger.debug("close frame not sent", exc_info=True)
        if not sockets:
            return original(self)
        logger.info("Closing %i WebSocket(s) with %i before shutdown", len(sockets), SERVICE_RESTART)
        deadline = time.monotonic() + CLOSE_GRACE_SECONDS

        @defer.inlineCallbacks
        def wait_then_kill():
            while time.monotonic() < deadline and any(p.state != p.STATE_CLOSED for p in sockets):
                yield task.deferLater(reactor, 0.02, lambda: None)
            result = yield original(self)
            return result

        return wait_then_kill()

    Server.kill_all_applications = kill_all_applications


@patch(
    "daphne", ">=4.2,<4.3",
    "Twisted parses the Content-Type and form of every POST, which daphne never reads "
    "(bench/JOURNAL.md, findings 14 and 18)",
    also={"Twisted": ">=26.10,<26.11"},
)
def skip_twisted_form_parsing() -> None:
    """
    Stop Twisted from parsing POST bodies that daphne never looks at.

    Twisted's ``Request.requestReceived`` parses the Content-Type of every POST with the ``email``
    package, and url-encoded or multipart bodies into ``request.args``; daphne passes the raw body
    to the application and ignores ``args``. Twisted's ``Request.__init__`` sets
    ``_parsePOSTFormSubmission`` on the instance from its ``parsePOSTFormSubmission`` argument
    (default True), so the argument is what must change.
    """
    from daphne.http_protocol import WebRequest

    original_init = WebRequest.__init__

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        original_init(self, *args, **kwargs)

    WebRequest.__init__ = __init__


@patch(
    "daphne", ">=4.2,<4.3",
    "autobahn's general send path was most of a frame's cost for the plain text frames this service sends "
    "(bench/JOURNAL.md, finding 41)",
    also={"autobahn": ">=26.10,<26.11"},
)
def direct_text_frames() -> None:
    """
    Write a text message to an open WebSocket as one frame, without autobahn's general send path.

    daphne hands every ``websocket.send`` with text to autobahn's ``sendMessage``, which asserts its
    argument types, chooses compression and fragmentation, builds the frame in ``sendFrame`` (bit
    operations, ``struct``, a list join) and writes it in ``sendData`` with a debug-log call. For the
    frames this service sends (text, unfragmented, no compression, unmasked, nothing queued for a
    chopped or synchronous write, no frame or octet logging, no timing) this writes the same bytes
    (RFC 6455 section 5.2: FIN and opcode 1, the length in 7, 16 or 64 bits, the UTF-8 payload) and
    counts the same traffic statistics. Anything else (binary data, compression negotiated, a
    payload over the size limit or the auto-fragmentation size, a socket not open) goes through
    daphne and autobahn as before.
    """
    from daphne import ws_protocol

    WebSocketProtocol = ws_protocol.WebSocketProtocol
    original = WebSocketProtocol.serverSend
    daphne_logger = ws_protocol.logger
    OPEN = WebSocketProtocol.STATE_OPEN

    def serverSend(self, content, binary=False):
        if (
            binary
            or type(content) is not str
            or self.state != OPEN
            or self._perMessageCompress is not None
            or self.maskServerFrames
            or self.send_queue
            or self.logFrames
            or self.logOctets
            or self.trackedTimings
            or daphne_logger.isEnabledFor(10)  # DEBUG: daphne logs each send
        ):
            return original(self, content, binary)
        payload = content.encode("utf8")
        length = len(payload)
        if 0 < self.maxMessagePayloadSize < length or 0 < self.autoFragmentSize < length:
            return original(self, content, binary)  # refused as too big, or fragmented
        if length <= 125:
            frame = bytes((0x81, length)) + payload
        elif length <= 0xFFFF:
            frame = b"\x81\x7e" + length.to_bytes(2, "big") + payload
        else:
            frame = b"\x81\x7f" + length.to_bytes(8, "big") + payload
        stats = self.trafficStats
        stats.outgoingWebSocketMessages += 1
        stats.outgoingOctetsAppLevel += length
        stats.outgoingOctetsWebSocketLevel += length
        stats.outgoingWebSocketFrames += 1
        stats.outgoingOctetsWireLevel += len(frame)
        self.transport.write(frame)

    WebSocketProtocol.serverSend = serverSend


def _close_for_policy(protocol, what: str) -> None:
    """Close ``protocol``'s socket with 1008 and drop what the application sends afterwards."""
    from ..conf import server_setting

    protocol._closed_by_server = True
    # autobahn's closeHandshakeTimeout is per connection (copied from the factory's options when it
    # opened) and read when the close frame is sent: the client gets the time to drain the queue.
    protocol.closeHandshakeTimeout = float(server_setting("WEBSOCKET_POLICY_CLOSE_DRAIN_SECONDS"))
    logger.warning("WebSocket %s closed with %d: %s", protocol.client_addr, POLICY_VIOLATION, what)
    protocol.sendCloseFrame(code=POLICY_VIOLATION, isReply=False)


@patch(
    "daphne", ">=4.2,<4.3",
    "a socket that never read grew daphne by 1.1 GB in 30 s: Twisted buffers every frame the client does not "
    "take (issue 23)",
    also={"Twisted": ">=26.10,<26.11", "autobahn": ">=26.10,<26.11"},
)
def close_websockets_that_do_not_read() -> None:
    """
    Close a WebSocket with 1008 when more than SERVER['WEBSOCKET_MAX_UNSENT_BYTES'] wait to be sent to it.

    daphne writes each ``websocket.send`` to Twisted at once and never asks whether the client
    takes it; what the kernel does not take stays in Twisted's buffer. A client that does not
    read (and asks for a catch-up of megabytes every 50 ms) grew daphne from 105 to 1,257 MB in
    30 s. Before each frame the bytes still waiting in the transport are counted
    (server.patches.twisted.unsent_bytes); past the limit the frame is dropped and a close frame
    (1008) goes after what is queued. autobahn drops the connection, and with it the buffer, when
    the client does not answer the close within SERVER['WEBSOCKET_POLICY_CLOSE_DRAIN_SECONDS']
    (autobahn's own closeHandshakeTimeout, 1 s, lost the 1008 of a client that drained a
    megabyte more slowly than that, and of every client of a starved server). What the
    application sends after that close is dropped instead of raising in its ``send``: the
    application learns of the close from the ``websocket.disconnect`` that follows.
    """
    from daphne.ws_protocol import WebSocketProtocol

    from ..conf import server_setting
    from .twisted import unsent_bytes

    WebSocketProtocol.maxUnsentBytes = int(server_setting("WEBSOCKET_MAX_UNSENT_BYTES") or 0)
    WebSocketProtocol._closed_by_server = False
    inner = WebSocketProtocol.serverSend
    OPEN = WebSocketProtocol.STATE_OPEN

    def serverSend(self, content, binary=False):
        if self.state == OPEN:
            limit = self.maxUnsentBytes
            if limit and unsent_bytes(self.transport) > limit:
                _close_for_policy(self, f"more than {limit} bytes unsent: the client does not read")
                return None
        elif self._closed_by_server:
            return None  # closed by a limit here: the application hears of it by websocket.disconnect
        return inner(self, content, binary)

    WebSocketProtocol.serverSend = serverSend


@patch(
    "daphne", ">=4.2,<4.3",
    "10,000 protocol-level pings were all answered, outside the frame budget the application keeps (issue 23)",
    also={"autobahn": ">=26.10,<26.11"},
)
def limit_websocket_pings() -> None:
    """
    Give a WebSocket's protocol-level pings a budget, and close the socket with 1008 past it.

    autobahn answers every ping frame with a pong (``onPing``) below the application, so the
    application's own budget of client frames never sees them: 10,000 pings were 10,000 pongs. Here
    each ping takes a token from a bucket of SERVER['WEBSOCKET_PING_BURST'] tokens refilled at
    SERVER['WEBSOCKET_PING_RATE'] a second (by default the size of REALTIME's frame budget); a ping
    with no token left closes the socket with 1008.
    """
    from daphne.ws_protocol import WebSocketProtocol

    from ..conf import server_setting

    rate = float(server_setting("WEBSOCKET_PING_RATE") or 0)
    burst = float(server_setting("WEBSOCKET_PING_BURST") or 0)
    WebSocketProtocol._closed_by_server = False
    inner = WebSocketProtocol.onPing

    def onPing(self, payload):
        budget = self.__dict__.get("_ping_budget")
        if budget is None:
            budget = self._ping_budget = PingBudget(rate, burst)
        if not budget.take():
            if self.state == self.STATE_OPEN:
                _close_for_policy(self, budget.describe())
            return None
        return inner(self, payload)

    WebSocketProtocol.onPing = onPing


_BODY_TOO_LARGE = (413, b"Payload Too Large")
_BODY_TIMEOUT = (408, b"Request Timeout")


@patch(
    "daphne", ">=4.2,<4.3",
    "Twisted spooled a declared 2 GiB body to a temporary file before the application could refuse it, and "
    "waited for a slow body without a timeout (issue 23)",
    also={"Twisted": ">=26.10,<26.11"},
)
def bound_request_bodies() -> None:
    """
    Refuse an HTTP body over the limit from its declared length (413), and time out slow requests (408).

    Twisted reads a request's whole body before daphne hands it to the application, into a
    temporary file from 100 KB (``Request.gotLength``): an unauthenticated client could make the
    server spool a declared 2 GiB to disk, and one that declared ``Content-Length: 1000`` and sent 7
    bytes held its connection for Twisted's idle timeout (12 hours, reset by every byte).

    Here a declared length over Django's DATA_UPLOAD_MAX_MEMORY_SIZE (the limit server/http.py
    applies too) is answered 413 at once, before the body is read, and the connection closed; a
    chunked body is refused the same way once it passes the limit. A request whose head and body
    have not all arrived SERVER['REQUEST_READ_TIMEOUT_SECONDS'] after its first line is answered
    408 and its connection closed, by daphne's own timeout check (every 2 s, ``check_timeouts``).
    The application never sees a refused request.
    """
    from daphne.http_protocol import WebRequest
    from django.conf import settings

    from ..conf import server_setting

    timeout = float(server_setting("REQUEST_READ_TIMEOUT_SECONDS") or 0)
    WebRequest._body_refused = False
    WebRequest._body_received = 0
    init, got_length, handle_chunk = WebRequest.__init__, WebRequest.gotLength, WebRequest.handleContentChunk
    received, daphne_checks = WebRequest.requestReceived, WebRequest.check_timeouts

    def refuse(self, answer: tuple[int, bytes], detail: str) -> None:
        self._body_refused = True
        self._read_started = None
        status, phrase = answer
        body = json.dumps({"detail": detail}).encode()
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        content, self.content = getattr(self, "content", None), io.BytesIO()
        if content is not None:
            content.close()  # a temporary file already made for a chunked body
        self.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" after the answer
        channel = self.channel
        if channel is not None and channel.transport is not None:
            channel.transport.write(head % (status, phrase, len(body)) + body)
            channel.transport.loseConnection()
        logger.info("HTTP request refused with %d: %s", status, detail)

    def limit() -> int | None:
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._read_started = time.monotonic()  # made at the request's first line

    def gotLength(self, length):
        most = limit()
        if length is not None and most is not None and length > most:
            refuse(self, _BODY_TOO_LARGE, f"The request body is too large (limit {most} bytes).")
            return
        got_length(self, length)

    def handleContentChunk(self, data):
        if self._body_refused:
            return  # the rest of a read that held the refused request
        self._body_received += len(data)
        most = limit()
        if most is not None and self._body_received > most:
            refuse(self, _BODY_TOO_LARGE, f"The request body is too large (limit {most} bytes).")
            return
        handle_chunk(self, data)

    def requestReceived(self, command, path, version):
        if self._body_refused:
            return None  # answered already; the application never sees it
        self._read_started = None
        return received(self, command, path, version)

    def check_timeouts(self):
        started = self.__dict__.get("_read_started")
        if timeout and started is not None and time.monotonic() - started > timeout:
            refuse(self, _BODY_TIMEOUT, f"The request did not arrive within {timeout:g} seconds.")
            return
        daphne_checks(self)

    WebRequest.__init__ = __init__
    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.requestReceived = requestReceived
    WebRequest.check_timeouts = check_timeouts
