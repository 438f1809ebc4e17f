"""uvicorn writes each response's head and body in one call (notifications_site/uvicorn_compat.py)."""

from __future__ import annotations

import asyncio

import pytest

httptools_impl = pytest.importorskip("uvicorn.protocols.http.httptools_impl", reason="uvicorn with httptools is a runtime requirement")

from uvicorn.config import Config  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from notifications_site.uvicorn_compat import coalesce_response_head  # noqa: E402

REQUEST = b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """What uvicorn's own protocol tests give the protocol: each write recorded as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def serve_one(app, *, stock: bool = False, request: bytes = REQUEST) -> tuple[RecordingTransport, object]:
    """
    Run ``app`` for one request through uvicorn's httptools protocol, with the patch or (``stock``)
    without it; the transport it wrote to and the protocol.
    """
    assert coalesce_response_head()
    patched = httptools_impl.RequestResponseCycle.send
    if stock:
        httptools_impl.RequestResponseCycle.send = patched.__wrapped__
    try:
        config = Config(app=app, http="httptools", lifespan="off", access_log=False)
        config.load()
        transport = RecordingTransport()
        protocol = httptools_impl.HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        protocol.connection_made(transport)
        protocol.data_received(request)
        await asyncio.wait_for(asyncio.gather(*protocol.tasks), 5)
    finally:
        httptools_impl.RequestResponseCycle.send = patched
    return transport, protocol


def django_like(body: bytes, headers=((b"content-type", b"application/json"),)):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 201, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_a_response_is_written_in_one_call_with_its_head_first():
    transport, _ = await serve_one(django_like(b'{"id":1}'))
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 Created\r\n") and b"content-length: 8" in head
    assert body == b'{"id":1}'
    assert not transport.closed


async def test_the_bytes_written_are_those_stock_uvicorn_writes_in_two_calls():
    coalesced, _ = await serve_one(django_like(b"hello"))
    stock, _ = await serve_one(django_like(b"hello"), stock=True)
    assert len(stock.writes) == 2
    assert coalesced.writes == [b"".join(stock.writes)]


async def test_a_streamed_response_writes_its_head_with_the_first_block_and_the_rest_as_they_come():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for block in (b"one", b"two"):
            await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    transport, protocol = await serve_one(app)
    assert len(transport.writes) == 3
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n3\r\none\r\n")
    assert transport.writes[1:] == [b"3\r\ntwo\r\n", b"0\r\n\r\n"]


async def test_an_application_that_fails_after_the_head_gets_the_head_written_and_the_connection_closed_as_without_the_patch():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        raise RuntimeError("the view broke after the head")

    transport, protocol = await serve_one(app)
    stock, _ = await serve_one(app, stock=True)
    assert transport.writes == stock.writes and len(stock.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.closed and stock.closed
    assert protocol.cycle.transport is transport


async def test_a_head_request_gets_its_head_at_once_as_without_the_patch():
    # uvicorn writes no body for HEAD: a held head would wait for a write that never comes.
    head_request = REQUEST.replace(b"GET ", b"HEAD ")
    transport, protocol = await serve_one(django_like(b"hello"), request=head_request)
    stock, _ = await serve_one(django_like(b"hello"), stock=True, request=head_request)
    assert transport.writes == stock.writes and len(stock.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 201 Created\r\n") and b"content-length: 5" in transport.writes[0]
    assert transport.writes[0].endswith(b"\r\n\r\n")
    assert not transport.closed and protocol.cycle.transport is transport


async def test_a_head_uvicorn_refuses_is_not_held_and_the_connection_is_closed_as_without_the_patch():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", b"line\r\nbreak")]})

    transport, protocol = await serve_one(app)
    stock, _ = await serve_one(app, stock=True)
    assert transport.writes == stock.writes == []
    assert transport.closed and stock.closed
    assert protocol.cycle.transport is transport


def test_patching_twice_wraps_once():
    assert coalesce_response_head()
    first = httptools_impl.RequestResponseCycle.send
    assert coalesce_response_head()
    assert httptools_impl.RequestResponseCycle.send is first
