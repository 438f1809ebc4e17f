"""
uvicorn's sans-I/O WebSocket protocol and its HTTP protocol with the patches of server/patches/uvicorn.py,
driven in-process over a transport that records what is written (the end-to-end tests run real uvicorn:
tests/hardening/test_resource_limits.py, test_websocket_abuse.py).
"""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from server import patches

DRAIN = 0.2


class Transport:
    """An asyncio transport that keeps what is written; ``unsent`` is what it pretends the kernel has not taken."""

    def __init__(self) -> None:
        self.written, self.unsent, self.closing, self.aborted, self.protocol = bytearray(), 0, False, False, None

    def write(self, data) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        if not self.unsent and self.protocol is not None:  # asyncio: lost once the buffer is drained
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
            self.protocol = None

    def abort(self) -> None:
        self.closing = self.aborted = True
        if self.protocol is not None:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
            self.protocol = None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


@pytest.fixture
def under_uvicorn(settings):
    settings.SERVER = {**getattr(settings, "SERVER", {}), "WEBSOCKET_MAX_UNSENT_BYTES": 1000, "WEBSOCKET_POLICY_CLOSE_DRAIN_SECONDS": DRAIN}
    import uvicorn.config  # noqa: F401  (the patches wait for it)

    patches.apply()
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from server.patches import uvicorn as ours

    # The patches read their settings when applied: these tests apply them once more over the process' own,
    # with the test's values, and put the process' patched methods back afterwards.
    saved = {(cls, name): value for cls in (WebSocketsSansIOProtocol, HttpToolsProtocol) for name, value in vars(cls).items() if callable(value)}
    ours.forget_uvicorn_handshakes.function()
    ours.close_uvicorn_websockets_that_do_not_read.function()
    ours.bound_uvicorn_request_heads.function()
    yield
    for (cls, name), value in saved.items():
        setattr(cls, name, value)


def _config(app):
    from uvicorn.config import Config

    config = Config(app=app, ws="websockets-sansio", lifespan="off", ws_per_message_deflate=False, ws_ping_interval=None, log_level="warning")
    config.load()
    return config


def _masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _open_socket(app):
    """A sans-I/O protocol over a recording transport, its handshake done by ``app`` (which accepts)."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from uvicorn.server import ServerState

    protocol = WebSocketsSansIOProtocol(_config(app), ServerState(), {}, _loop=asyncio.get_running_loop())
    transport = Transport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.data_received(
        f"GET /ws/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    for _ in range(50):
        await asyncio.sleep(0)
        if protocol.handshake_complete:
            break
    assert b"101 Switching Protocols" in transport.written
    transport.written.clear()
    return protocol, transport


def _app(events: list, go: asyncio.Event, sends: list):
    """An ASGI app that accepts, waits for ``go``, sends ``sends`` (recording what each did), then reads until disconnect."""

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await go.wait()
        for message in sends:
            try:
                await asyncio.wait_for(send(message), 1)
                events.append(("sent", message["type"]))
            except Exception as exc:  # what a consumer would see
                events.append(("raised", type(exc).__name__))
        while True:
            message = await receive()
            events.append(("received", message["type"], message.get("code")))
            if message["type"] == "websocket.disconnect":
                return

    return app


async def _settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


@pytest.mark.asyncio
async def test_a_send_past_the_unsent_limit_closes_with_1008_and_later_sends_are_dropped(under_uvicorn):
    events, go = [], asyncio.Event()
    protocol, transport = await _open_socket(_app(events, go, [{"type": "websocket.send", "text": "x"}] * 2))
    transport.unsent = 5000  # the client has not taken 5,000 bytes
    go.set()
    await _settle()
    assert transport.written[:2] == b"\x88\x02" and transport.written[2:4] == (1008).to_bytes(2, "big")
    assert events[:2] == [("sent", "websocket.send"), ("sent", "websocket.send")]  # the second dropped, not waited on
    assert ("received", "websocket.disconnect", 1008) in events
    await _settle(DRAIN + 0.1)
    assert transport.aborted, "a client that does not take the close is dropped after the drain time"


@pytest.mark.asyncio
async def test_an_open_socket_keeps_neither_its_handshake_request_nor_its_response(under_uvicorn):
    events, go = [], asyncio.Event()
    protocol, transport = await _open_socket(_app(events, go, [{"type": "websocket.send", "text": "hello"}]))
    assert protocol.request is None and protocol.response is None
    go.set()
    await _settle()
    assert events == [("sent", "websocket.send")]
    assert transport.written == b"\x81\x05hello"


@pytest.mark.asyncio
async def test_a_send_while_the_client_stops_reading_is_written_at_once(under_uvicorn):
    events, go = [], asyncio.Event()
    protocol, transport = await _open_socket(_app(events, go, [{"type": "websocket.send", "text": "hello"}]))
    protocol.pause_writing()  # uvicorn's own send would wait here until the client reads
    go.set()
    await _settle()
    assert events == [("sent", "websocket.send")]
    assert transport.written == b"\x81\x05hello"


@pytest.mark.asyncio
async def test_after_the_clients_close_a_send_raises_client_disconnected_instead_of_waiting(under_uvicorn):
    events, go = [], asyncio.Event()
    protocol, transport = await _open_socket(_app(events, go, [{"type": "websocket.send", "text": "late"}]))
    transport.unsent = 500  # under the limit, but the client reads no more
    protocol.pause_writing()
    protocol.data_received(_masked(0x8, (1000).to_bytes(2, "big")))
    await _settle()
    go.set()
    await _settle()
    assert ("raised", "ClientDisconnected") in events
    await _settle(DRAIN + 0.1)
    assert transport.aborted, "the client's close is followed by the drop too"


@pytest.mark.asyncio
async def test_a_bad_frame_from_a_client_that_does_not_read_is_followed_by_the_drop(under_uvicorn):
    events, go = [], asyncio.Event()
    protocol, transport = await _open_socket(_app(events, go, []))
    transport.unsent = 500
    protocol.pause_writing()
    protocol.data_received(b"\x81\x05hello")  # unmasked: a protocol error (1002)
    await _settle()
    assert transport.closing and not transport.aborted
    await _settle(DRAIN + 0.1)
    assert transport.aborted


@pytest.mark.asyncio
async def test_a_pipelined_head_waits_for_the_answer_before_it_and_then_gets_its_408(under_uvicorn, settings):
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from server.patches import uvicorn as ours

    settings.SERVER = {**settings.SERVER, "REQUEST_READ_TIMEOUT_SECONDS": 0.2}
    ours.bound_uvicorn_request_heads.function()
    answer = asyncio.Event()

    async def app(scope, receive, send):
        await answer.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    protocol = HttpToolsProtocol(_config(app), ServerState(), {}, _loop=asyncio.get_running_loop())
    transport = Transport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo")
    await _settle(0.5)  # past the head's time while /a is still being answered
    assert b"408" not in transport.written
    answer.set()
    await _settle(0.05)
    assert transport.written.startswith(b"HTTP/1.1 200 OK")
    await _settle(0.4)
    assert transport.written.count(b"HTTP/1.1 408 Request Timeout") == 1
    assert transport.written.index(b"408") > transport.written.index(b"200 OK")


@pytest.mark.asyncio
async def test_the_shutdown_closes_an_open_socket_with_1012_and_the_reason_server_restart(under_uvicorn):
    from server.patches import uvicorn as ours

    ours.say_server_restart_on_uvicorn_shutdown.function()
    events, go = [], asyncio.Event()
    protocol, transport = await _open_socket(_app(events, go, []))
    go.set()
    await _settle()
    protocol.shutdown()  # what uvicorn's Server.shutdown does to each connection on SIGTERM
    await _settle()
    reason = b"server restart"
    assert bytes(transport.written) == bytes([0x88, 2 + len(reason)]) + (1012).to_bytes(2, "big") + reason
    assert transport.closing
    assert ("received", "websocket.disconnect", 1012) in events


@pytest.mark.asyncio
async def test_the_shutdown_after_a_close_already_sent_sends_nothing_more(under_uvicorn):
    from server.patches import uvicorn as ours

    ours.say_server_restart_on_uvicorn_shutdown.function()
    events, go = [], asyncio.Event()
    protocol, transport = await _open_socket(_app(events, go, [{"type": "websocket.close", "code": 4401}]))
    go.set()
    await _settle()
    sent = bytes(transport.written)
    assert sent[:4] == b"\x88\x02" + (4401).to_bytes(2, "big")
    protocol.shutdown()
    await _settle()
    assert bytes(transport.written) == sent, "uvicorn's own branch: the close already went, only the transport closes"
    assert transport.closing
