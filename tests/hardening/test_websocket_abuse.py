"""
Abuse of the WebSocket on a real daphne and uvicorn with Redis: oversized and malformed frames, floods and
cross-site hijacking. Each gets a clear error frame or close code; the server and the other users'
sockets keep working.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

import orjson
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import HttpSender, InboxClient, make_sender, make_users, token_for_id, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture(params=["daphne", "uvicorn"])
def live(daphne_factory, private_redis, request):
    """One server (daphne, uvicorn) on a private Redis, with a sender and three users (an abuser, a bystander, a spare)."""
    redis = private_redis()
    server = daphne_factory(server=request.param, redis_url=redis.url, env={"REALTIME_FRAME_RATE": "20", "REALTIME_FRAME_BURST": "60", "REALTIME_FRAME_ABUSE_CLOSE": "100"})
    users = make_users(3, prefix="ws")
    sender = make_sender()
    return server, users, sender


async def _open(server, user_id: int, *, origin: str | None = None, headers: dict | None = None, token: str | None = "auto"):
    kwargs = {"compression": None, "max_size": None, "ping_interval": None, "open_timeout": 5}
    if token == "auto":
        token = token_for_id(user_id)
    if token:
        kwargs["subprotocols"] = ["bearer", token]
    ws = await connect(f"{server.ws_url}?after=0", origin=origin or server.url, additional_headers=headers or {}, **kwargs)
    return ws


async def _frames_until(ws, predicate, timeout: float = 5.0) -> list[dict]:
    frames = []
    async def read():
        while True:
            frame = orjson.loads(await ws.recv())
            frames.append(frame)
            if predicate(frame):
                return
    await asyncio.wait_for(read(), timeout)
    return frames


async def _close_code(ws, timeout: float = 10.0) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


async def _bystander_still_served(server, sender, bystander) -> bool:
    """Another user's open socket still gets a new notification live."""
    client = InboxClient(server.ws_url, token_for_id(bystander.pk), user_id=bystander.pk, origin=server.url).start()
    try:
        assert await wait_until(client.synced.is_set, 10)
        http = HttpSender(server.url, token_for_id(sender.pk), concurrency=1)
        status, _, body, _, _ = await http.send({"recipient": bystander.pk, "title": "still here"})
        http.close()
        assert status == 201
        nid = orjson.loads(body)["id"]
        return await wait_until(lambda: nid in client.live_ids, 10)
    finally:
        await client.stop()


# --- Oversized frames -------------------------------------------------------------------------

OVERSIZED = {
    "text one byte over 64 KiB": "x" * (64 * 1024 + 1),
    "text of 4-byte characters over 64 KiB in UTF-8": "\U0001f600" * (16 * 1024 + 1),
    "text of 900 KiB": "x" * (900 * 1024),
    "text of 8 MiB (over the servers' own 1 MiB limit)": "x" * (8 * 1024 * 1024),
    "binary of 100 KiB": b"\0" * (100 * 1024),
}


async def test_oversized_frames_are_closed_with_1009_and_nobody_else_notices(live, figures):
    server, (abuser, bystander, _), sender = live
    codes = {}
    for name, payload in OVERSIZED.items():
        ws = await _open(server, abuser.pk)
        await _frames_until(ws, lambda f: f["type"] == "sync.done")
        try:
            await ws.send(payload)
        except (ConnectionClosed, OSError):
            pass  # the server may close before the whole frame is written
        codes[name] = await _close_code(ws)
    figures.update(close_codes=codes)
    assert codes == dict.fromkeys(OVERSIZED, 1009)
    assert await _bystander_still_served(server, sender, bystander)
    # The abuser may come back and is served normally.
    again = await _open(server, abuser.pk)
    await again.send(orjson.dumps({"type": "ping"}).decode())
    assert any(f["type"] == "pong" for f in await _frames_until(again, lambda f: f["type"] == "pong"))
    await again.close()
    assert "Traceback" not in server.read_log()


async def test_a_frame_of_exactly_64_kib_is_not_too_big(live):
    server, (abuser, _, _), _ = live
    ws = await _open(server, abuser.pk)
    await _frames_until(ws, lambda f: f["type"] == "sync.done")
    frame = '{"type":"ping","pad":"' + "x" * (64 * 1024 - 24) + '"}'
    assert len(frame.encode()) == 64 * 1024
    await ws.send(frame)
    assert (await _frames_until(ws, lambda f: f["type"] in ("pong", "error")))[-1]["type"] == "pong"
    await ws.close()


# --- Malformed frames -------------------------------------------------------------------------

BAD_FRAMES = {
    "not json": ("{nope", "invalid_json"),
    "truncated json": ('{"type": "read", "ids": [1, 2', "invalid_json"),
    "json array": ("[1, 2, 3]", "invalid_frame"),
    "json number": ("42", "invalid_frame"),
    "json string": ('"read"', "invalid_frame"),
    "json null": ("null", "invalid_frame"),
    "type is a number": ('{"type": 5}', "invalid_frame"),
    "type is missing": ('{"ids": [1]}', "invalid_frame"),
    "unknown type": ('{"type": "delete_everything"}', "unknown_type"),
    "type with a NUL": ('{"type": "read\\u0000"}', "unknown_type"),
    "ids is a string": ('{"type": "read", "ids": "1,2,3"}', "invalid_ids"),
    "ids is empty": ('{"type": "read", "ids": []}', "invalid_ids"),
    "ids holds a boolean": ('{"type": "ack", "ids": [true]}', "invalid_ids"),
    "ids holds a negative id": ('{"type": "read", "ids": [-1]}', "invalid_ids"),
    "ids holds zero": ('{"type": "read", "ids": [0]}', "invalid_ids"),
    "ids holds a float": ('{"type": "read", "ids": [1.5]}', "invalid_ids"),
    "ids holds 2**64": ('{"type": "read", "ids": [18446744073709551616]}', "invalid_ids"),
    "ids holds 2**63": ('{"type": "read", "ids": [9223372036854775808]}', "invalid_ids"),
    "ids holds 1e400": ('{"type": "read", "ids": [1e400]}', "invalid_json"),
    "ids holds a nested list": ('{"type": "read", "ids": [[1]]}', "invalid_ids"),
    "10,000 ids in one read frame": (orjson.dumps({"type": "read", "ids": list(range(1, 10_001))}).decode(), "too_many_ids"),
    "10,000 ids in one ack frame": (orjson.dumps({"type": "ack", "ids": list(range(1, 10_001))}).decode(), "too_many_ids"),
    "sync after a string": ('{"type": "sync", "after": "0"}', "invalid_after"),
    "sync after negative": ('{"type": "sync", "after": -1}', "invalid_after"),
    "sync after missing": ('{"type": "sync"}', "invalid_after"),
    "read_all category a list": ('{"type": "read_all", "category": ["a"]}', "invalid_category"),
    "read_all category with a NUL": ('{"type": "read_all", "category": "a\\u0000b"}', "invalid_category"),
    "read_all category too long": (orjson.dumps({"type": "read_all", "category": "c" * 51}).decode(), "invalid_category"),
    "nested 30,000 deep": ('{"type": "read", "ids": ' + "[" * 30_000 + "]" * 30_000 + "}", "invalid_json"),
    "nested 1,000 deep": ('{"type": "read", "ids": ' + "[" * 1000 + "]" * 1000 + "}", "invalid_ids"),
    "a lone surrogate": ('{"type": "read_all", "category": "\\ud800"}', "invalid_json"),
    "a BOM before the json": ("\ufeff" + '{"type": "ping"}', "invalid_json"),
    "right-to-left and zero-width characters": ('{"type": "read_all", "category": "\u202e\u200bx"}', None),
    "duplicate keys": ('{"type": "ping", "type": "read"}', "invalid_ids"),
}


async def test_malformed_frames_each_get_one_error_frame_and_the_socket_keeps_working(live, figures):
    server, (abuser, bystander, _), sender = live
    ws = await _open(server, abuser.pk)
    await _frames_until(ws, lambda f: f["type"] == "sync.done")
    answers = {}
    for name, (frame, expected) in BAD_FRAMES.items():
        await asyncio.sleep(0.1)  # two frames per pair: stay under the 20 frames/s rate limit
        await ws.send(frame)
        # A ping after each bad frame: what comes before the pong is the answer to the bad frame.
        await ws.send('{"type": "ping"}')
        try:
            frames = await _frames_until(ws, lambda f: f["type"] == "pong")
        except (TimeoutError, asyncio.TimeoutError, ConnectionClosed) as exc:
            raise AssertionError(f"no answer to the frame {name!r}: {exc!r}") from None
        errors = [f for f in frames if f["type"] == "error"]
        answers[name] = errors[0]["code"] if errors else None
        if expected is None:
            assert not errors, (name, errors)
        else:
            assert [e["code"] for e in errors] == [expected], (name, errors)
            assert errors[0]["detail"]
    figures.update(bad_frames=len(BAD_FRAMES), answers=answers)
    await ws.close()
    assert await _bystander_still_served(server, sender, bystander)
    assert "Traceback" not in server.read_log()


async def test_invalid_utf8_in_a_text_frame_closes_with_1007_and_the_server_stays_up(live):
    server, (abuser, bystander, _), sender = live
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws/notifications/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: bearer, {token_for_id(abuser.pk)}\r\n"
            f"Origin: {server.url}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n", 1)[0]
    payload, mask = b'{"type": "\xff\xfe"}', os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        close_at = data.find(b"\x88")
        if close_at != -1 and len(data) >= close_at + 4:
            break
    s.close()
    close_at = data.find(b"\x88")
    assert close_at != -1, "no close frame"
    assert struct.unpack("!H", data[close_at + 2 : close_at + 4])[0] == 1007
    assert await _bystander_still_served(server, sender, bystander)


# --- Floods -----------------------------------------------------------------------------------


async def test_a_frame_flood_gets_rate_limited_error_frames_then_a_4429_close(live, figures):
    server, (abuser, bystander, _), sender = live
    ws = await _open(server, abuser.pk)
    await _frames_until(ws, lambda f: f["type"] == "sync.done")
    sent = 0
    try:
        for _ in range(1000):
            await ws.send('{"type": "ping"}')
            sent += 1
    except ConnectionClosed:
        pass
    pongs = limited = 0
    code = None
    try:
        while True:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            pongs += frame["type"] == "pong"
            limited += frame.get("code") == "rate_limited"
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
    figures.update(frames_sent=sent, pongs=pongs, rate_limited_error_frames=limited, close_code=code)
    assert code == 4429
    assert 60 <= pongs < 200, "the burst is served, the flood is not"
    assert limited >= 50
    assert await _bystander_still_served(server, sender, bystander)


# --- Cross-site WebSocket hijacking -----------------------------------------------------------


def _admin_session_cookie(server) -> str:
    """Sign in to the admin like a browser (login form + CSRF) and return the session cookie."""
    import http.cookiejar
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{server.url}/admin/login/", timeout=5).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode({"username": "root-admin", "password": "pw-secret-123", "csrfmiddlewaretoken": csrf, "next": "/admin/"})
    req = urllib.request.Request(f"{server.url}/admin/login/", data=form.encode(), headers={"Referer": f"{server.url}/admin/login/"})
    page = opener.open(req, timeout=5).read()
    assert b"Log out" in page or b"logout" in page, "the admin login failed"
    return "; ".join(f"{c.name}={c.value}" for c in jar)


FOREIGN_ORIGINS = ["http://evil.example", "null", "http://127.0.0.1.evil.example", "https://evil.example:443", "http://localhost.evil.example"]


@pytest.fixture
def admin_cookie(live):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    admin = get_user_model().objects.create_superuser("root-admin", "root@example.com")
    # daphne runs the production settings: a hash it knows (the test settings use MD5).
    admin.password = PBKDF2PasswordHasher().encode("pw-secret-123", PBKDF2PasswordHasher().salt())
    admin.save(update_fields=["password"])
    server = live[0]
    return _admin_session_cookie(server)


async def test_a_foreign_origin_with_the_admins_session_cookie_is_refused(live, admin_cookie, figures):
    server, (user, _, _), _ = live
    answers = {}
    for origin in FOREIGN_ORIGINS:
        for with_token in (False, True):
            extra = {"subprotocols": ["bearer", token_for_id(user.pk)]} if with_token else {}
            try:
                ws = await connect(f"{server.ws_url}?after=0", origin=origin, additional_headers={"Cookie": admin_cookie}, compression=None, open_timeout=5, **extra)
                await ws.close()
                answers[f"{origin} token={with_token}"] = "opened"
            except InvalidStatus as refused:
                answers[f"{origin} token={with_token}"] = refused.response.status_code
    figures.update(answers=answers)
    assert set(answers.values()) == {403}, answers


async def test_the_session_cookie_alone_never_opens_a_socket_even_from_the_right_origin(live, admin_cookie):
    server = live[0]
    ws = await connect(f"{server.ws_url}?after=0", origin=server.url, additional_headers={"Cookie": admin_cookie}, compression=None, open_timeout=5)
    assert await _close_code(ws) == 4401


async def test_a_cross_site_post_riding_on_the_admins_session_is_refused(live, admin_cookie):
    server, (_, bystander, _), _ = live
    http = HttpSender(server.url, "", concurrency=1)
    status, _, body, _ = await http.request(
        "POST", "/api/notifications/", {"recipient": bystander.pk, "title": "forged"},
        headers={"Cookie": admin_cookie, "Origin": "http://evil.example", "Authorization": ""},
    )
    http.close()
    assert status == 403, body
    assert b"CSRF" in body

    from inbox.models import Notification

    assert not await database_sync_to_async(Notification.objects.filter(title="forged").exists)()
