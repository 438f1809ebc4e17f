"""Patches of daphne 4.2: close codes, shutdown, form parsing, text frames (server/patches)."""

from __future__ import annotations

import sys

from . import patch

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
