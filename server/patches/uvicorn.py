"""Patches of uvicorn 0.54 (its sans-I/O WebSockets, ``--ws websockets-sansio``, and httptools): client limits (server/patches)."""

from __future__ import annotations

import importlib
import logging
import sys

from . import patch
from .limits import POLICY_VIOLATION, SERVICE_RESTART, SERVICE_RESTART_REASON, PingBudget

logger = logging.getLogger(__name__)

def _uvicorns(module: str, name: str):
    """uvicorn's class ``module.name``, if this process runs uvicorn; None elsewhere (daphne, manage.py)."""
    if "uvicorn.config" not in sys.modules:
        return None  # not under uvicorn (which imports its protocols after the application)
    return getattr(importlib.import_module(f"uvicorn.protocols.{module}"), name)


def _sansio_protocol():
    return _uvicorns("websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol")


def _drop_later(protocol, seconds: float) -> None:
    """
    Drop ``protocol``'s connection, and what it still buffers, if it is not gone within ``seconds``.

    It is the closing handshake's timer (uvicorn's ``close_timer``, which calls ``transport.close()``:
    that waits for the buffer to drain), so the client's answer to the close still ends it at once.
    """
    if protocol.close_timer is not None:
        protocol.close_timer.cancel()
    protocol.close_timer = protocol.loop.call_later(max(seconds, 0.0), protocol.transport.abort)


def _close_for_policy(protocol, what: str) -> None:
    """Close with 1008 after what is queued, tell the application, and drop the connection after the drain time."""
    from websockets.protocol import State

    from ..conf import server_setting

    if protocol.conn.state is not State.OPEN:
        return  # already closing (the client's close, the server's 1012): nothing to add

    protocol._closed_by_server = True
    logger.warning("WebSocket %s closed with %d: %s", protocol.client, POLICY_VIOLATION, what)
    protocol.queue.put_nowait({"type": "websocket.disconnect", "code": POLICY_VIOLATION, "reason": ""})
    protocol.conn.send_close(POLICY_VIOLATION)
    protocol.transport.write(b"".join(protocol.conn.data_to_send()))
    protocol.close_sent = True
    if protocol.read_paused:  # read on, to see the client's answer to the close
        protocol.read_paused = False
        protocol.transport.resume_reading()
    _drop_later(protocol, float(server_setting("WEBSOCKET_POLICY_CLOSE_DRAIN_SECONDS")))


@patch(
    "uvicorn", ">=0.54,<0.55",
    "uvicorn keeps every socket's handshake request and response, headers and all, for the socket's life: "
    "about 4.6 KB of each socket's 34 KB (issue 22, bench/JOURNAL.md finding 81)",
    also={"websockets": ">=17,<18"},
)
def forget_uvicorn_handshakes() -> bool:
    """
    Drop a socket's handshake request and response (``request``, ``response``) once its accept is sent.

    uvicorn 0.54 builds the scope from the request in ``handle_connect`` and never reads it again; it
    writes the 101 response when the application accepts and reads it nowhere after. Both stay on the
    protocol object while the socket is open. Applied before ``close_uvicorn_websockets_that_do_not_read``,
    whose ``send`` writes the frames itself, this ``send`` is reached only by the accept and the
    closes, never per frame (in the other order it would still be correct, one call deeper per frame).
    """
    protocol_class = _sansio_protocol()
    if protocol_class is None:
        return False
    inner_send = protocol_class.send

    async def send(self, message):
        await inner_send(self, message)
        if self.handshake_complete and self.__dict__.get("request") is not None:
            self.request = self.response = None

    protocol_class.send = send
    return True


@patch(
    "uvicorn", ">=0.54,<0.55",
    "uvicorn's send waits while a client does not read, so one such socket held its consumer, and the frames "
    "meant for it queued there (issue 22; issue 23's bound, as daphne's patch keeps it)",
    also={"websockets": ">=17,<18"},
)
def close_uvicorn_websockets_that_do_not_read() -> bool:
    """
    Write a socket's frames at once, and close it with 1008 past SERVER['WEBSOCKET_MAX_UNSENT_BYTES'].

    uvicorn's ``send`` awaits the transport's ``writable`` event: while a client takes nothing, the
    consumer's task waits in it, and what the channel layer brings for that socket waits behind it.
    Here a ``websocket.send`` on an open socket writes at once while the bytes the transport still
    holds are under the limit; past it the frame is dropped, a close frame (1008) goes after what is
    queued, the application hears ``websocket.disconnect`` (1008), and the connection is dropped
    SERVER['WEBSOCKET_POLICY_CLOSE_DRAIN_SECONDS'] later if the client has not taken it all (asyncio's
    ``close()`` waits for a buffer to drain, forever for a client that never reads). The same drop
    follows every other close (the application's, the client's, a bad frame's, the keepalive's 1011).
    Once the socket is closing, a ``websocket.send`` does not wait either: it is dropped after a close
    made here, as daphne's patch does, and is ``ClientDisconnected`` otherwise (what uvicorn raises
    for a socket it cannot write to).
    """
    protocol_class = _sansio_protocol()
    if protocol_class is None:
        return False
    from websockets.exceptions import InvalidState
    from websockets.protocol import State

    from uvicorn.protocols.utils import ClientDisconnected

    from ..conf import server_setting

    limit = int(server_setting("WEBSOCKET_MAX_UNSENT_BYTES") or 0)
    drain = float(server_setting("WEBSOCKET_POLICY_CLOSE_DRAIN_SECONDS"))
    protocol_class._closed_by_server = False
    inner_send = protocol_class.send
    OPEN = State.OPEN

    async def send(self, message):
        kind = message["type"]
        if self.handshake_complete and self.initial_response is None and kind in ("websocket.send", "websocket.close"):
            if self.disconnected:
                raise ClientDisconnected()
            if self.close_sent or self.conn.state is not OPEN or self.transport.is_closing():
                if self._closed_by_server:
                    return None  # closed by a limit here: the application hears of it by websocket.disconnect
                if kind == "websocket.send":
                    raise ClientDisconnected()  # closing: uvicorn's send would wait, then raise this
                if self.close_sent:
                    return await inner_send(self, message)  # a second close: uvicorn's own error
                return None  # the client's close, or the server's 1012, went first
            if kind == "websocket.send":
                if limit and self.transport.get_write_buffer_size() > limit:
                    _close_for_policy(self, f"more than {limit} bytes unsent: the client does not read")
                    return None
                try:
                    data = message.get("bytes")
                    if data is not None:
                        self.conn.send_binary(data)
                    else:
                        text = message.get("text")
                        if text is not None:
                            self.conn.send_text(text.encode())
                except InvalidState:
                    raise ClientDisconnected() from None
                self.transport.write(b"".join(self.conn.data_to_send()))
                return None
            # websocket.close on an open socket: uvicorn's, without waiting for the client to read first
            # (the close goes after what is queued), then the drop.
            paused = not self.writable.is_set()
            self.writable.set()
            try:
                await inner_send(self, message)
            finally:
                if paused and not self.disconnected:
                    self.writable.clear()
            if not self.disconnected:
                _drop_later(self, drain)
            return None
        return await inner_send(self, message)

    protocol_class.send = send

    def dropping_after(name: str) -> None:
        """After uvicorn's ``name`` has closed the socket, drop it if it is still there after the drain time."""
        inner = getattr(protocol_class, name)

        def closing(self, *args):
            inner(self, *args)
            if not self.disconnected and self.transport.is_closing():
                _drop_later(self, drain)

        closing.__name__ = name
        setattr(protocol_class, name, closing)

    for name in ("keepalive_timeout", "handle_close", "handle_parser_exception"):
        dropping_after(name)
    return True


@patch(
    "uvicorn", ">=0.54,<0.55",
    "uvicorn answers every protocol-level ping below the application, outside its frame budget, and writes the "
    "pong whether the client reads or not (issue 23's budget, as daphne's patch keeps it)",
    also={"websockets": ">=17,<18"},
)
def limit_uvicorn_websocket_pings() -> bool:
    """
    Give a socket's protocol-level pings the budget daphne's patch gives them (SERVER['WEBSOCKET_PING_RATE'],
    SERVER['WEBSOCKET_PING_BURST']): past it, no pong is written and the socket is closed with 1008.

    websockets queues a pong for every ping as it parses what arrived, and uvicorn's ``handle_ping`` writes
    whatever is queued: the first ping of a read wrote the pongs of all the others (421 of 10,000 answered in a
    suite run on two busy cores). So the pings of each read are counted right after it is parsed: when the
    budget has not enough tokens for them all, what websockets queued is dropped and the 1008 goes out instead;
    after that close, nothing more is answered.
    """
    protocol_class = _sansio_protocol()
    if protocol_class is None:
        return False
    from websockets.frames import Frame, Opcode
    from websockets.protocol import State

    from ..conf import server_setting

    rate = float(server_setting("WEBSOCKET_PING_RATE") or 0)
    burst = float(server_setting("WEBSOCKET_PING_BURST") or 0)
    PING = Opcode.PING
    protocol_class._closed_by_server = False

    def data_received(self, data):
        conn = self.conn
        conn.receive_data(data)
        if self._closed_by_server:
            conn.data_to_send()  # closed by a limit here: nothing more is answered
        elif conn.parser_exc is None and conn.state is State.OPEN:
            pings = sum(1 for event in conn.events if type(event) is Frame and event.opcode is PING)
            if pings:
                budget = self.__dict__.get("_ping_budget")
                if budget is None:
                    budget = self._ping_budget = PingBudget(rate, burst)
                if not budget.take(pings):
                    conn.data_to_send()  # the pongs websockets queued: not sent
                    _close_for_policy(self, budget.describe())
        # uvicorn's own data_received, after its receive_data
        if conn.parser_exc is not None:
            self.handle_parser_exception()
            return
        self.handle_events()

    protocol_class.data_received = data_received
    return True


@patch(
    "uvicorn", ">=0.54,<0.55",
    "uvicorn's SIGTERM closes every socket with 1012 and an empty reason, daphne's patch with 'server restart': "
    "the clients read the same close whichever server stops, and uvicorn has no option for the reason",
    also={"websockets": ">=17,<18"},
)
def say_server_restart_on_uvicorn_shutdown() -> bool:
    """
    Give the 1012 uvicorn's shutdown sends every open socket the reason "server restart".

    uvicorn's ``shutdown`` (``Server.shutdown`` calls it on each connection on SIGTERM) sends
    ``conn.send_close(1012)`` with no reason and no option or hook to give one; this is its own branch for an
    open socket, with the reason (and in the application's ``websocket.disconnect``). Every other case (a
    close already sent, the handshake not done, a socket already closing) is uvicorn's, unchanged.
    """
    protocol_class = _sansio_protocol()
    if protocol_class is None:
        return False
    from websockets.protocol import State

    inner_shutdown = protocol_class.shutdown
    OPEN = State.OPEN

    def shutdown(self) -> None:
        if self.close_sent or not self.handshake_complete or self.conn.state is not OPEN:
            return inner_shutdown(self)
        self.stop_keepalive()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": SERVICE_RESTART, "reason": SERVICE_RESTART_REASON})
        self.conn.send_close(SERVICE_RESTART, SERVICE_RESTART_REASON)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()

    protocol_class.shutdown = shutdown
    return True


def _httptools_protocol():
    return _uvicorns("http.httptools_impl", "HttpToolsProtocol")


@patch(
    "uvicorn", ">=0.54,<0.55",
    "uvicorn puts no deadline on a request head: a connection that sends one byte now and then, or none, was held "
    "for as long as its client wanted (daphne's patch answers it 408)",
    also={"httptools": ">=0.6,<0.10"},
)
def bound_uvicorn_request_heads() -> bool:
    """
    Answer 408 and close a connection whose request head is not complete SERVER['REQUEST_READ_TIMEOUT_SECONDS']
    after the connection opened or the request's first byte came.

    uvicorn (httptools) starts a timer only between requests (``--timeout-keep-alive``), and the first byte of a
    request cancels it; nothing bounds the head itself, so a slow client held its connection without end. The
    body's own deadline is the application's (server/http.py), as on daphne.
    """
    protocol_class = _httptools_protocol()
    if protocol_class is None:
        return False
    from ..conf import server_setting

    timeout = float(server_setting("REQUEST_READ_TIMEOUT_SECONDS") or 0)
    if not timeout:
        return True
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 32\r\nconnection: close\r\n\r\nThe request head took too long.\n"
    )
    protocol_class._head_timer = None

    def expire(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            arm(self)  # a pipelined request's head: its time starts again once the answer before it is out
            return
        if not self.transport.is_closing():
            logger.warning("HTTP %s: request head not complete after %gs: 408", self.client, timeout)
            self.transport.write(answer)
            self.transport.close()

    def arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(timeout, expire, self)

    def disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    inner_made, inner_begin = protocol_class.connection_made, protocol_class.on_message_begin
    inner_complete, inner_lost = protocol_class.on_headers_complete, protocol_class.connection_lost

    def connection_made(self, transport):
        inner_made(self, transport)
        arm(self)

    def on_message_begin(self):
        arm(self)
        inner_begin(self)

    def on_headers_complete(self):
        disarm(self)
        inner_complete(self)

    def connection_lost(self, exc):
        disarm(self)
        inner_lost(self, exc)

    protocol_class.connection_made = connection_made
    protocol_class.on_message_begin = on_message_begin
    protocol_class.on_headers_complete = on_headers_complete
    protocol_class.connection_lost = connection_lost
    return True
