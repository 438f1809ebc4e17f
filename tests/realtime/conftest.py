"""
WebSocket fixtures: communicators built like notifications_site.asgi, the channel layer under test
(in-memory and the real Redis one), a private redis-server a test may stop and start, helpers to
create notifications from async tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections

from inbox import services
from realtime import publisher
from tests import services as ext

from . import recording_layer

ORIGIN = b"http://127.0.0.1"
WS_PATH = "/ws/notifications/"
TIMEOUT = 3


def build_application():
    """
    The application daphne serves: notifications_site.asgi, whose WebSocket half is
    AllowedHostsOriginValidator(JWTAuthMiddlewareStack(URLRouter(websocket_urlpatterns))).
    """
    from notifications_site.asgi import application

    return application


class Socket(WebsocketCommunicator):
    """A WebsocketCommunicator with helpers that read frames the way a client does."""

    connected: bool
    subprotocol: str | int | None

    async def frame(self, timeout: float = TIMEOUT) -> dict:
        return await self.receive_json_from(timeout)

    async def frames(self, n: int, timeout: float = TIMEOUT) -> list[dict]:
        return [await self.frame(timeout) for _ in range(n)]

    async def until_sync_done(self, timeout: float = TIMEOUT) -> tuple[list[dict], dict]:
        """Frames up to and including sync.done: (the frames before it, sync.done)."""
        got = []
        while True:
            f = await self.frame(timeout)
            if f["type"] == "sync.done":
                return got, f
            got.append(f)

    async def close_code(self, timeout: float = TIMEOUT) -> int:
        """Waits for the server to close the socket; fails if a data frame comes first."""
        out = await self.receive_output(timeout)
        assert out["type"] == "websocket.close", f"expected a close, got {out}"
        return out.get("code", 1000)

    async def silent(self, timeout: float = 0.3) -> bool:
        return await self.receive_nothing(timeout)


@pytest.fixture(autouse=True)
def fresh_channel_layers():
    """No layer instance or fan-out publisher survives from one test to the next."""
    channel_layers.backends.clear()
    publisher.unbind_loop()
    yield
    publisher.unbind_loop()
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
async def close_worker_thread_connections():
    """
    database_sync_to_async runs in one long-lived worker thread whose PostgreSQL connection
    (CONN_MAX_AGE) would outlive the test and block the drop of the test database.
    """
    yield
    await database_sync_to_async(connections.close_all)()


@pytest.fixture(params=["memory", "redis"])
def layer(request, settings):
    """Runs the test against the in-memory layer and against the real channels-redis layer."""
    if request.param == "redis":
        request.getfixturevalue("redis_channel_layer")
    else:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        channel_layers.backends.clear()
    yield request.param
    channel_layers.backends.clear()


@pytest.fixture
async def socket_factory(token_for):
    """
    Opens sockets against whatever layer is configured: ``await ws(user)`` (token in the query string), ``await ws(user, via="subprotocol")``,
    ``await ws(token="...")``, ``await ws(user, after=12)``. Every socket is disconnected after the test.
    """
    opened: list[Socket] = []

    async def open_socket(
        user=None,
        *,
        token: str | None = None,
        via: str = "query",
        after: int | str | None = None,
        query: str = "",
        origin: bytes | None = ORIGIN,
        subprotocols: list[str] | None = None,
    ) -> Socket:
        if token is None and user is not None:
            token = token_for(user)
        params = [query] if query else []
        if after is not None:
            params.append(f"after={after}")
        if token is not None and via == "query":
            params.append(f"token={token}")
        if token is not None and via == "subprotocol":
            subprotocols = ["bearer", token]
        path = WS_PATH + ("?" + "&".join(params) if params else "")
        headers = [(b"origin", origin)] if origin is not None else []
        sock = Socket(build_application(), path, headers=headers, subprotocols=subprotocols)
        opened.append(sock)
        sock.connected, sock.subprotocol = await sock.connect(timeout=TIMEOUT)
        return sock

    yield open_socket
    for sock in opened:
        # Python 3.11's asyncio.wait_for can swallow a cancellation that lands while redis-py opens
        # its first connection (CPython gh-86296); the communicator then cancels a second time.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await sock.disconnect(timeout=0.5)
    publisher.unbind_loop()
    channel = get_channel_layer()
    if hasattr(channel, "close_pools"):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(channel.close_pools(), 2)


@pytest.fixture
def ws(layer, socket_factory):
    """socket_factory, run once with the in-memory layer and once with the real Redis layer."""
    return socket_factory


@pytest.fixture
async def connected(ws):
    """Opens a socket for a user and reads its initial catch-up up to sync.done."""

    async def open_and_sync(user, **kwargs) -> Socket:
        sock = await ws(user, **kwargs)
        assert sock.connected
        _, done = await sock.until_sync_done()
        sock.sync_done = done
        return sock

    return open_and_sync


# --- Data -------------------------------------------------------------------------------------


@pytest.fixture
def send():
    """``await send(alice, bob, title=...)``: the bulk service path, from async code."""

    async def create(*recipients, title: str = "Hello", **kwargs):
        return await database_sync_to_async(services.notification_create)(recipients=list(recipients), title=title, **kwargs)

    return create


async def group_members(group: str) -> list[str]:
    """The channels in a group, from whichever layer is configured."""
    layer = get_channel_layer()
    if hasattr(layer, "group_key"):
        conn = layer.connection(layer.consistent_hash(group))
        return [m.decode() for m in await conn.zrange(layer.group_key(group), 0, -1)]
    return list(layer.groups.get(group, {}))


@pytest.fixture
def calls(settings, redis_url):
    """The production layer on the real Redis, recording each send call the publisher makes."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "tests.realtime.recording_layer.RecordingLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": f"test-{uuid.uuid4().hex[:8]}"},
        }
    }
    channel_layers.backends.clear()
    recording_layer.CALLS.clear()
    yield recording_layer.CALLS
    recording_layer.CALLS.clear()


# --- A private Redis the test may stop and start -----------------------------------------------


class PrivateRedis:
    """A redis-server of the test's own on a free port, so the test can kill it without harming others."""

    def __init__(self, workdir: Path) -> None:
        self.port = ext.free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self, timeout: float = 10) -> "PrivateRedis":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
             "--enable-debug-command", "local"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                c = self.client()
                c.ping()
                c.close()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Kill it (SIGKILL, like a crash) and wait until the port refuses connections."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    @contextlib.contextmanager
    def monitor(self):
        """Yields a list that fills with the server's MONITOR lines while the block runs."""
        lines: list[str] = []
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.sendall(b"MONITOR\r\n")
        sock.settimeout(0.05)
        stop = threading.Event()

        def read() -> None:
            buf = b""
            while not stop.is_set():
                try:
                    chunk = sock.recv(1 << 16)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                *complete, buf = (buf + chunk).split(b"\r\n")
                lines.extend(line.decode(errors="replace") for line in complete)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        time.sleep(0.05)
        try:
            yield lines
        finally:
            time.sleep(0.2)
            stop.set()
            reader.join(2)
            sock.close()

    @staticmethod
    def client_commands(lines: list[str], name: str, containing: str = "") -> list[str]:
        """MONITOR lines of one command sent by a client (not run inside a script)."""
        name = f'] "{name.lower()}"'
        return [line for line in lines if "lua]" not in line and name in line.lower() and containing in line]

    def commandstats(self) -> dict[str, int]:
        c = self.client()
        try:
            return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in c.info("commandstats").items()}
        finally:
            c.close()


@pytest.fixture
def private_redis(tmp_path):
    if not Path("/usr/bin/redis-server").exists() and subprocess.run(["which", "redis-server"], capture_output=True).returncode:
        ext.unavailable("redis-server is not installed")
    server = PrivateRedis(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def private_redis_layer(settings, private_redis):
    """The production layer against the private Redis (fails fast when it is down)."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.BatchingRedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": private_redis.url, "socket_timeout": 1.0, "socket_connect_timeout": 1.0}],
                "prefix": f"test-{uuid.uuid4().hex[:8]}",
            },
        }
    }
    settings.REALTIME = {**settings.REALTIME, "SEND_TIMEOUT": 1.0}
    channel_layers.backends.clear()
    yield private_redis
    channel_layers.backends.clear()


# --- A REST client for end-to-end tests -----------------------------------------------------------


class RestClient:
    """Keep-alive JSON client for a real server (stdlib only). Call through asyncio.to_thread from async tests."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, (json.loads(data) if data else None)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body: dict) -> tuple[int, dict | None]:
        return self.request("POST", path, body)

    def close(self) -> None:
        self.conn.close()


async def open_client(server, token: str | None, *, via: str = "subprotocol", after: int | None = None, origin: str | None = None):
    """A real websockets client on a daphne server; returns (connection, sync.done frame)."""
    from websockets.asyncio.client import connect

    query = []
    if after is not None:
        query.append(f"after={after}")
    if token is not None and via == "query":
        query.append(f"token={token}")
    url = server.ws_url + ("?" + "&".join(query) if query else "")
    subprotocols = ["bearer", token] if token is not None and via == "subprotocol" else None
    ws = await connect(url, origin=origin or f"http://127.0.0.1:{server.port}", subprotocols=subprotocols, compression=None)
    frame = await recv_json(ws)
    while frame["type"] != "sync.done":
        frame = await recv_json(ws)
    return ws, frame


async def recv_json(ws, timeout: float = 5) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))
