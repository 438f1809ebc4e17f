"""
The WebSocket's Origin check follows the product's web origins (INBOX["ALLOWED_ORIGINS"], from
INBOX_ALLOWED_ORIGINS) besides ALLOWED_HOSTS: exactly those origins, scheme, host and port. A
foreign origin is refused at the handshake, before any token is read: the handshake is denied
(channels' WebsocketDenier), which daphne answers with an HTTP 403.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import access_token_for

from .conftest import open_client

pytestmark = pytest.mark.django_db(transaction=True)

APP = "https://app.example.com"


@pytest.fixture
def origins(settings):
    settings.INBOX = {**getattr(settings, "INBOX", {}), "ALLOWED_ORIGINS": [APP, "http://localhost:3000"]}


async def test_a_socket_from_an_allowed_origin_of_the_product_is_accepted(socket_factory, origins, alice):
    for origin in (APP, "http://localhost:3000"):
        sock = await socket_factory(alice, origin=origin.encode())
        assert sock.connected, origin
        _, done = await sock.until_sync_done()
        assert done["type"] == "sync.done"


@pytest.mark.parametrize(
    "origin",
    [
        "http://app.example.com",  # another scheme
        "https://app.example.com:8443",  # another port
        "https://evil.example",
        "https://app.example.com.evil.example",
        "https://sub.app.example.com",
        "https://app.example.com:443.evil.example",  # not a port: refused, not a crash
        "https://app.example.com:99999",
        "https://[::1",
        "null",
    ],
)
async def test_a_socket_from_another_origin_is_refused_at_the_handshake(socket_factory, origins, alice, origin):
    sock = await socket_factory(alice, origin=origin.encode())
    assert not sock.connected


async def test_the_hosts_own_origins_and_clients_without_origin_are_still_accepted(socket_factory, origins, alice):
    own = await socket_factory(alice)  # Origin: http://127.0.0.1, one of ALLOWED_HOSTS
    assert own.connected
    # ALLOWED_HOSTS match by host name, whatever the scheme and port (channels' rule, as before).
    other_port = await socket_factory(alice, origin=b"http://localhost:3001")
    assert other_port.connected
    without = await socket_factory(alice, origin=None)  # not a browser: its token decides
    assert without.connected


async def test_without_allowed_origins_the_products_origin_is_refused(socket_factory, settings, alice):
    settings.INBOX = {**getattr(settings, "INBOX", {}), "ALLOWED_ORIGINS": []}
    sock = await socket_factory(alice, origin=APP.encode())
    assert not sock.connected


@pytest.mark.e2e
async def test_through_daphne_the_products_origin_is_accepted_and_a_foreign_one_gets_a_403(daphne_factory, alice):
    server = await asyncio.to_thread(daphne_factory, env={"INBOX_ALLOWED_ORIGINS": APP})
    token = access_token_for(alice)

    ws, done = await open_client(server, token, origin=APP)
    assert done["type"] == "sync.done"
    await ws.close()

    with pytest.raises(InvalidStatus) as refused:
        await connect(server.ws_url, origin="https://evil.example", subprotocols=["bearer", token])
    assert refused.value.response.status_code == 403
