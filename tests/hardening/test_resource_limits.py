"""
What one client may make the server hold, through real daphne and uvicorn (the image's server): the
bytes queued for a socket that does not read, syncs repeated while a catch-up runs, sockets per
user across server processes, request bodies declared too large or sent too slowly, and
protocol-level pings (issue 23, resource exhaustion).
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import orjson
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .conftest import make_users, token_for_id, wait_until
from .test_slow_client import open_and_never_read, rss_kb

pytestmark = [pytest.mark.e2e]

MiB = 1024 * 1024


def store_notifications(user, count: int, message_chars: int) -> None:
    from inbox.models import Notification

    Notification.objects.bulk_create(
        Notification(recipient=user, title=f"big-{i}", message="m" * message_chars) for i in range(count)
    )


def masked_text_frame(text: str) -> bytes:
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_code_in(stream: bytes) -> int | None:
    """The code of the close frame that ends ``stream`` (server frames: unmasked), None if there is none."""
    at = 0
    while at + 2 <= len(stream):
        opcode, length = stream[at] & 0x0F, stream[at + 1] & 0x7F
        head = 2
        if length == 126:
            length, head = struct.unpack("!H", stream[at + 2 : at + 4])[0], 4
        elif length == 127:
            length, head = struct.unpack("!Q", stream[at + 2 : at + 10])[0], 10
        if opcode == 0x8:
            return struct.unpack("!H", stream[at + head : at + head + 2])[0] if length >= 2 else None
        at += head + length
    return None


def read_to_the_end(s: socket.socket, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    data = bytearray()
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError, socket.timeout):
        pass
    return bytes(data)


async def _close_code(ws, timeout: float = 10.0) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None
    except (TimeoutError, asyncio.TimeoutError):
        return None  # still open


async def _open(server, user_id: int, **kwargs):
    return await connect(
        f"{server.ws_url}?after=0", origin=server.url, subprotocols=["bearer", token_for_id(user_id)],
        compression=None, max_size=None, ping_interval=None, open_timeout=5, **kwargs,
    )


async def _synced(ws, timeout: float = 10.0) -> list[dict]:
    frames = []

    async def read():
        while True:
            frame = orjson.loads(await ws.recv())
            frames.append(frame)
            if frame["type"] == "sync.done":
                return

    await asyncio.wait_for(read(), timeout)
    return frames


# --- A socket that does not read --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_a_socket_that_never_reads_while_asking_for_catch_ups_is_closed_with_1008_and_the_server_stays_small(
    daphne_factory, private_redis, figures, kind
):
    server = daphne_factory(server=kind, redis_url=private_redis().url, env={"INBOX_WEBSOCKET_MAX_UNSENT_BYTES": str(MiB)})
    [user] = await database_sync_to_async(make_users)(1, prefix="reader")
    await database_sync_to_async(store_notifications)(user, 200, 10_000)  # a catch-up of 2 MB
    s = open_and_never_read(server, token_for_id(user.pk))
    rss_before = rss_kb(server.proc.pid)
    sync = masked_text_frame('{"type":"sync","after":0}')
    started = time.monotonic()
    closed_at = None
    try:
        # Under the frame limit (20/s): a sync every 50 ms, never a byte read, until the server closes it.
        while time.monotonic() - started < 10:
            try:
                s.sendall(sync)
            except OSError:
                break
            if "closed with 1008" in server.read_log():
                closed_at = time.monotonic() - started
                break
            await asyncio.sleep(0.05)
        rss_at_close = rss_kb(server.proc.pid)
        stream = read_to_the_end(s)  # the client reads at last: what was queued, then the close
    finally:
        s.close()
    await asyncio.sleep(1)
    rss_after = rss_kb(server.proc.pid)
    figures.update(
        closed_after_s=closed_at, rss_growth_at_close_kb=rss_at_close - rss_before, rss_growth_after_kb=rss_after - rss_before,
        bytes_read_after_the_close=len(stream), close_code=close_code_in(stream),
    )
    assert closed_at is not None, f"{kind} never closed a socket that does not read (RSS +{(rss_at_close - rss_before) // 1024} MB)"
    assert close_code_in(stream) == 1008
    # The limit is 1 MiB of queued frames: the server does not hold the catch-ups it cannot send.
    assert rss_after - rss_before < 40 * 1024, f"{kind} grew by {(rss_after - rss_before) // 1024} MB"
    assert "Traceback" not in server.read_log()


async def test_syncs_repeated_while_a_catch_up_is_in_flight_are_answered_by_one_catch_up(daphne_factory, private_redis):
    server = daphne_factory(redis_url=private_redis().url)
    [user] = await database_sync_to_async(make_users)(1, prefix="syncer")
    await database_sync_to_async(store_notifications)(user, 200, 100)
    ws = await _open(server, user.pk)
    assert len(await _synced(ws)) == 201
    for _ in range(10):
        await ws.send('{"type":"sync","after":0}')
    frames = []
    try:
        while True:
            frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), 2)))
    except (TimeoutError, asyncio.TimeoutError):
        pass
    await ws.close()
    done = [f for f in frames if f["type"] == "sync.done"]
    caught_up = [f for f in frames if f.get("catchup")]
    # Ten syncs before the first catch-up ran: one catch-up (at most two, if one ran before the
    # rest arrived), each notification once per catch-up, not 2,000 frames.
    assert 1 <= len(done) <= 2, [f["type"] for f in frames][:20]
    assert len(caught_up) == 200 * len(done)
    assert all(d["last_id"] == done[0]["last_id"] for d in done)


# --- Sockets per user -------------------------------------------------------------------------


async def test_a_user_past_the_socket_cap_is_closed_with_4408_on_every_server_process_and_gets_in_again_later(
    daphne_factory, private_redis
):
    redis = private_redis()
    env = {"REALTIME_MAX_SOCKETS_PER_USER": "3"}
    one, two = daphne_factory(redis_url=redis.url, env=env), daphne_factory(redis_url=redis.url, env=env)
    user, other = await database_sync_to_async(make_users)(2, prefix="tabs")
    held = [await _open(one, user.pk), await _open(one, user.pk), await _open(two, user.pk)]
    for ws in held:
        await _synced(ws)
    refused = {}
    for name, server in (("second process", two), ("first process", one)):
        ws = await _open(server, user.pk)
        frames = []
        try:
            while True:
                frames.append(orjson.loads(await asyncio.wait_for(ws.recv(), 5)))
        except ConnectionClosed as exc:
            refused[name] = (exc.rcvd.code if exc.rcvd else None, [f.get("code") for f in frames])
        except (TimeoutError, asyncio.TimeoutError):
            refused[name] = ("still open", [f.get("type") for f in frames][-1:])
    assert refused == {"second process": (4408, ["too_many_sockets"]), "first process": (4408, ["too_many_sockets"])}
    # Another user is not affected by this user's sockets.
    bystander = await _open(two, other.pk)
    await _synced(bystander)
    # One tab closes: a new socket gets in, on either process.
    await held.pop().close()
    await asyncio.sleep(0.3)
    again = await _open(one, user.pk)
    await _synced(again)
    for ws in (*held, again, bystander):
        await ws.close()
    for server in (one, two):
        assert "Traceback" not in server.read_log()


# --- Request bodies ---------------------------------------------------------------------------


def raw_request(server, head: bytes, body: bytes = b"", *, wait: float = 8.0) -> tuple[bytes, float]:
    """Send ``head`` and ``body`` on a new connection; the answer up to the server's close, and how long it took."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=wait)
    started = time.monotonic()
    try:
        try:
            s.sendall(head + body)
        except OSError:
            pass  # refused while it was still sending: the answer was written first
        answer = read_to_the_end(s, timeout=wait)
    finally:
        s.close()
    return answer, time.monotonic() - started


def post_head(server, headers: str) -> bytes:
    return (
        f"POST /api/notifications/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n{headers}\r\n"
    ).encode()


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
def test_a_body_declared_over_the_limit_is_a_413_before_it_is_read_and_a_slow_body_a_408(daphne_factory, kind, figures):
    server = daphne_factory(server=kind, env={"INBOX_REQUEST_READ_TIMEOUT_SECONDS": "1"})
    # An unauthenticated client declares 2 GiB and sends a few bytes of it.
    answer, took = raw_request(server, post_head(server, "Content-Length: 2147483648\r\n"), b'{"title":')
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"too large" in answer and took < 3
    # Content-Length: 1000 and 7 bytes sent: answered 408 (daphne checks its timeouts every 2 s).
    slow, slow_took = raw_request(server, post_head(server, "Content-Length: 1000\r\n"), b'{"a": 1')
    assert slow.startswith(b"HTTP/1.1 408"), (slow[:200], server.read_log()[-3000:])
    assert slow_took < 5
    # A chunked body past the limit (1 MiB) is refused as it grows.
    chunk = b"x" * 65536
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))
    big, _ = raw_request(server, post_head(server, "Transfer-Encoding: chunked\r\n"), chunked)
    assert big.startswith(b"HTTP/1.1 413"), big[:200]
    figures.update(server=kind, declared_2gib=answer.split(b"\r\n", 1)[0].decode(), declared_s=round(took, 2),
                   slow_body=slow.split(b"\r\n", 1)[0].decode(), slow_s=round(slow_took, 2))
    # The server still answers.
    ok, _ = raw_request(server, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.1 200")
    assert "Traceback" not in server.read_log()


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
def test_a_request_head_that_never_ends_is_a_408(daphne_factory, kind, figures):
    server = daphne_factory(server=kind, env={"INBOX_REQUEST_READ_TIMEOUT_SECONDS": "1"})
    # The first line and one header, and then nothing: the blank line that ends the head never comes.
    answer, took = raw_request(server, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n".encode())
    figures.update(server=kind, answer=answer.split(b"\r\n", 1)[0].decode(errors="replace"), took_s=round(took, 2))
    assert answer.startswith(b"HTTP/1.1 408"), (answer[:200], server.read_log()[-3000:])
    assert took < 5  # daphne checks its timeouts every 2 s
    ok, _ = raw_request(server, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.1 200")
    assert "Traceback" not in server.read_log()


# --- Protocol pings ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_a_flood_of_protocol_pings_is_closed_with_1008_within_the_frame_budget(daphne_factory, private_redis, figures, kind):
    server = daphne_factory(server=kind, redis_url=private_redis().url)
    [user] = await database_sync_to_async(make_users)(1, prefix="pinger")
    ws = await _open(server, user.pk)
    await _synced(ws)
    answered = 0
    waiters = []
    try:
        for i in range(10_000):
            waiters.append(await ws.ping(i.to_bytes(4, "big")))
            if i % 100 == 99:
                await asyncio.sleep(0)  # let the client read what comes back (pongs, the close)
    except ConnectionClosed:
        pass
    code = await _close_code(ws)
    answered = sum(1 for w in waiters if w.done() and not w.cancelled() and w.exception() is None)
    figures.update(pings_sent=len(waiters), pongs=answered, close_code=code)
    assert code == 1008
    assert answered <= 100, "the burst (60) is answered, the flood is not"
    # The same user connects again and is served.
    again = await _open(server, user.pk)
    await _synced(again)
    await again.close()
