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

And process-level fixes for daphne: exit promptly after its shutdown, no Twisted form parsing of
POST bodies daphne never reads, writes sent at once instead of on the next turn of the loop,
autobahn's debug-log labels built only when such a message is written, and no access-log line
formatted when daphne's verbosity drops it, and text frames written directly instead of through
autobahn's general send path (see each function).
"""

from __future__ import annotations

# RFC 6455 7.4.1 and the IANA registry: codes an endpoint may put in a close frame.
STANDARD_CLOSE_CODES = frozenset({1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def allow_standard_close_codes() -> None:
    """Patch daphne's WebSocketProtocol.serverClose once (no-op without daphne)."""
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # another ASGI server
        return
    if getattr(WebSocketProtocol, "_inbox_standard_close_codes", False):
        return
    original = WebSocketProtocol.serverClose

    def serverClose(self, code=None):
        if code in STANDARD_CLOSE_CODES:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code)

    WebSocketProtocol.serverClose = serverClose
    WebSocketProtocol._inbox_standard_close_codes = True

    from daphne.ws_protocol import WebSocketFactory

    factory_init = WebSocketFactory.__init__

    def __init__(self, *args, **kwargs):
        factory_init(self, *args, **kwargs)
        self.setProtocolOptions(failByDrop=False)

    WebSocketFactory.__init__ = __init__


def exit_promptly_after_shutdown() -> None:
    """
    Under daphne, end the process once the reactor has shut down (SIGTERM, SIGINT).

    A request in flight runs the middleware chain in a worker thread that waits in async_to_sync
    for the view's coroutine on the event loop. daphne stops that loop on SIGTERM, so the thread
    waits forever, and Python's exit waits for the thread: under load the process never exited by
    itself and was killed by the process manager (10 s in the test, 90 s under systemd's default).
    Those requests are lost either way (their clients get a reset and retry, idempotently); the
    process now exits right after daphne's own shutdown instead of hanging.
    """
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        return  # not under daphne; importing the reactor here would install the wrong one
    from twisted.internet import reactor

    if getattr(reactor, "_inbox_exit_after_shutdown", False):
        return

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
    reactor._inbox_exit_after_shutdown = True


def skip_twisted_form_parsing() -> None:
    """
    Stop Twisted from parsing POST bodies that daphne never looks at.

    Twisted's ``Request.requestReceived`` parses the Content-Type of every POST with the ``email``
    package, and url-encoded or multipart bodies into ``request.args``; daphne passes the raw body
    to the application and ignores ``args``. bench/ profile of directed sends: 5-9 % of the
    server's CPU in ``_parseContentType`` (``EmailMessage`` header parsing).
    Twisted's ``Request.__init__`` sets ``_parsePOSTFormSubmission`` on the instance from its
    ``parsePOSTFormSubmission`` argument (default True), so the argument is what must change.
    """
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # another ASGI server
        return
    if getattr(WebRequest, "_inbox_no_form_parsing", False):
        return
    original_init = WebRequest.__init__

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        original_init(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    WebRequest._inbox_no_form_parsing = True


def write_through_tcp() -> None:
    """
    Send a write at once when nothing is waiting to be sent, as asyncio's own transports do.

    Twisted's ``FileDescriptor.write`` buffers every write and registers the socket with the
    reactor's selector; the bytes go out on a later turn of the loop, when the socket is reported
    writable, and the socket is unregistered again: two ``epoll_ctl`` calls and a loop callback per
    WebSocket frame. bench/ profile of a broadcast: ``addWriter``/``add_writer`` 8.7 %, ``doWrite``
    6.4 %, ``stopWriting`` 4.2 % of the servers' samples. Here a write to a plain TCP connection with
    an empty buffer is sent right away; what the kernel does not take (or a write to a connection
    with bytes still waiting, or any error) goes through Twisted's buffered write as before, so the
    order of bytes and Twisted's handling of errors and producers are unchanged.
    """
    try:
        from twisted.internet import tcp
    except ImportError:  # not under daphne
        return
    if getattr(tcp.Connection, "_inbox_write_through", False):
        return
    buffered_write = tcp.Connection.write

    def write(self, data):
        if (
            type(data) is bytes
            and data
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
            and not self.producerPaused
        ):
            sent = self.writeSomeData(data)
            if type(sent) is int and sent > 0:
                if sent == len(data):
                    return
                data = data[sent:]
        buffered_write(self, data)

    tcp.Connection.write = write
    tcp.Connection._inbox_write_through = True


class _LazyLabel:
    """A log argument formatted only when a message is written (str() or format())."""

    __slots__ = ("_format", "_args", "_kwargs")

    def __init__(self, format_, args, kwargs) -> None:
        self._format = format_
        self._args = args
        self._kwargs = kwargs

    def __str__(self) -> str:
        return self._format(*self._args, **self._kwargs)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    __repr__ = __str__


def lazy_autobahn_log_labels() -> None:
    """
    Build autobahn's coloured log labels only for messages that are written.

    autobahn logs every frame it sends (``WebSocketProtocol.sendData``) and every read
    (``dataReceived``) at debug level, and builds the arguments first: ``hltype(...)`` and
    ``hlval(...)``, each coloured with ``click.style``, about 3.3 us per frame. With debug logging
    off the logger drops them unread. bench/ profile of bulk sends: autobahn's ``hltype``/``hl`` and
    click's ``style`` were 8-9 % of the servers' samples. Here the names those modules call return
    a label that formats itself when a message is actually written, with the same text.
    """
    try:
        from autobahn.twisted import websocket as twisted_websocket
        from autobahn.websocket import protocol
    except ImportError:  # not under daphne
        return
    for module in (protocol, twisted_websocket):
        if getattr(module, "_inbox_lazy_labels", False):
            continue
        for name in ("hltype", "hlval"):
            eager = getattr(module, name)
            setattr(module, name, lambda *args, _eager=eager, **kwargs: _LazyLabel(_eager, args, kwargs))
        module._inbox_lazy_labels = True


def skip_discarded_access_log() -> None:
    """
    Don't format an access-log line that nobody will see.

    Twisted's ``HTTPFactory.log`` formats a combined-log line for every request and writes it to
    Twisted's log; at daphne's verbosity 0 and 1 that log goes nowhere (daphne begins Twisted's
    logging with an observer that drops everything; its own access log, ``--access-log``, is
    separate). bench/ profile of directed sends: 2.2 % of the servers' samples formatting and
    dropping those lines. At verbosity 2 and above the lines are written as before.
    """
    try:
        from daphne.http_protocol import HTTPFactory
    except ImportError:  # another ASGI server
        return
    if getattr(HTTPFactory, "_inbox_skips_discarded_log", False):
        return
    original_log = HTTPFactory.log

    def log(self, request):
        if getattr(self.server, "verbosity", 2) <= 1:
            return
        original_log(self, request)

    HTTPFactory.log = log
    HTTPFactory._inbox_skips_discarded_log = True


def direct_text_frames() -> None:
    """
    Write a text message to an open WebSocket as one frame, without autobahn's general send path.

    daphne hands every ``websocket.send`` with text to autobahn's ``sendMessage``, which asserts its
    argument types, chooses compression and fragmentation, builds the frame in ``sendFrame`` (bit
    operations, ``struct``, a list join) and writes it in ``sendData`` with a debug-log call: about
    2.8 us of the 3.8 us a frame takes in-process. bench/ profile of bulk sends: ``sendMessage`` and
    below 17 % of the servers' samples. For the frames this service sends (text, unfragmented, no
    compression, unmasked, nothing queued for a chopped or synchronous write, no frame or octet
    logging, no timing) this writes the same bytes (RFC 6455 section 5.2: FIN and opcode 1, the
    length in 7, 16 or 64 bits, the UTF-8 payload) and counts the same traffic statistics. Anything
    else (binary data, compression negotiated, a payload over the size limit or the auto-fragmentation
    size, a socket not open) goes through daphne and autobahn as before.
    """
    try:
        from daphne import ws_protocol
    except ImportError:  # another ASGI server
        return
    WebSocketProtocol = ws_protocol.WebSocketProtocol
    if getattr(WebSocketProtocol, "_inbox_direct_text_frames", False):
        return
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
    WebSocketProtocol._inbox_direct_text_frames = True
