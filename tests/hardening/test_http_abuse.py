"""
HTTP abuse: unicode edge cases and NULs on every endpoint (in process, on SQLite and PostgreSQL),
body limits and floods on a real daphne. Each gets a clear 4xx or a bounded result, never a 5xx.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from .conftest import HttpSender, make_sender, make_users, token_for_id


@pytest.fixture
def api(make_user, token_for):
    """(sender client, reader client, recipient) with 500s returned as responses, not raised."""
    sender, reader = make_user("abuse-sender", can_send=True), make_user("abuse-reader")

    def client(user):
        c = APIClient(raise_request_exception=False)
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        return c

    return client(sender), client(reader), reader


# --- Unicode ----------------------------------------------------------------------------------

VALID_TEXT = {
    "200 four-byte emoji (the title limit in characters)": "\U0001f600" * 200,
    "combining characters": "e\u0301" * 50,
    "right-to-left override and zero-width joiners": "\u202eabc\u200d\u200b\u2060",
    "a family emoji (a ZWJ sequence)": "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "private use and noncharacters": "\ue000\ufdd0\uffff",
    "CJK and Arabic": "通知 إشعار",
    "a lone BOM inside the text": "a\ufeffb",
}


@pytest.mark.parametrize("text", VALID_TEXT.values(), ids=VALID_TEXT.keys())
def test_unicode_edge_cases_are_stored_and_returned_exactly(api, text):
    sender, reader_client, reader = api
    body = {"recipient": reader.pk, "title": text, "message": text * 3, "data": {text: [text]}}
    response = sender.post("/api/notifications/", body, format="json")
    assert response.status_code == 201, response.content
    got = reader_client.get(f"/api/notifications/{response.json()['id']}/").json()
    assert (got["title"], got["message"], got["data"]) == (text, text * 3, {text: [text]})


def test_a_title_one_character_over_the_limit_in_emoji_is_400(api):
    sender, _, reader = api
    response = sender.post("/api/notifications/", {"recipient": reader.pk, "title": "\U0001f600" * 201}, format="json")
    assert response.status_code == 400 and "title" in response.json()


NUL_BODIES = {
    "title": {"title": "a\x00b"},
    "message": {"title": "t", "message": "a\x00b"},
    "category": {"title": "t", "category": "a\x00b"},
    "link": {"title": "t", "link": "https://example.com/\x00"},
    "data value": {"title": "t", "data": {"k": "a\x00b"}},
    "data key": {"title": "t", "data": {"a\x00b": 1}},
    "data nested value": {"title": "t", "data": {"k": [{"x": ["\x00"]}]}},
}


@pytest.mark.parametrize("extra", NUL_BODIES.values(), ids=NUL_BODIES.keys())
def test_a_nul_anywhere_in_a_send_is_400(api, extra):
    sender, _, reader = api
    response = sender.post("/api/notifications/", {"recipient": reader.pk, **extra}, format="json")
    assert response.status_code == 400, response.content


RAW_BODIES = {
    "a lone surrogate escape": b'{"recipient": 1, "title": "\\ud800"}',
    "invalid UTF-8 bytes": b'{"recipient": 1, "title": "\xff\xfe"}',
    "overlong UTF-8 for a slash": b'{"recipient": 1, "title": "\xc0\xaf"}',
    "a UTF-8 BOM before the object": b'\xef\xbb\xbf{"recipient": 1, "title": "t"}',
    "UTF-16": '{"recipient": 1, "title": "t"}'.encode("utf-16"),
    "a NUL byte between tokens": b'{"recipient": 1,\x00 "title": "t"}',
}

ENDPOINTS_WITH_BODIES = ["/api/notifications/", "/api/notifications/read-all/", "/api/auth/token/", "/api/auth/token/refresh/"]


@pytest.mark.parametrize("raw", RAW_BODIES.values(), ids=RAW_BODIES.keys())
@pytest.mark.parametrize("path", ENDPOINTS_WITH_BODIES)
def test_undecodable_bodies_are_400_on_every_endpoint(api, path, raw):
    sender, _, _ = api
    response = sender.generic("POST", path, raw, content_type="application/json")
    assert response.status_code == 400, (path, response.status_code, response.content[:200])
    assert b"Traceback" not in response.content


HOSTILE_QUERIES = [
    "category=%00", "category=a%00b", "after=%00", "after=1%00", "cursor=%00", "cursor=cD0x%00", "page_size=%00",
    "unread=%00", "unread=tr%00ue", "after=-1", "after=1e3", "after=%EF%BC%91", "after=99999999999999999999999",
    "page_size=-5", "page_size=99999999999999999999", "category=" + "c" * 5000, "cursor=" + "A" * 5000,
    "unread=true&unread=false", "after=1&after=2", "%ff=%fe", "category=%ED%A0%80",
]
GET_ENDPOINTS = ["/api/notifications/", "/api/notifications/unread-count/", "/api/me/", "/api/notifications/1/"]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
@pytest.mark.parametrize("path", GET_ENDPOINTS)
def test_hostile_query_strings_never_give_a_5xx(api, path, query):
    _, reader_client, _ = api
    response = reader_client.get(f"{path}?{query}")
    assert response.status_code < 500, (path, query, response.status_code, response.content[:300])
    assert response.status_code in (200, 400, 404), (path, query, response.status_code)


@pytest.mark.parametrize("path", ["/api/notifications/%00/", "/api/notifications/1%00/read/", "/api/notifications/%EF%BC%91/", "/api/notifications/00000000000000000000001/"])
def test_hostile_paths_are_404(api, path):
    _, reader_client, _ = api
    assert reader_client.get(path).status_code == 404


# --- Body limits on a real daphne -------------------------------------------------------------


def _raw_request(port: int, head: str, body_chunks, timeout: float = 30) -> tuple[int, bytes, float]:
    """Send a request on a raw socket; returns (status, body, seconds). The body may be cut by the server."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    started = time.monotonic()
    try:
        s.sendall(head.encode())
        for chunk in body_chunks:
            s.sendall(chunk)
    except OSError:
        pass  # the server answered and closed before the whole body was sent
    data = b""
    try:
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _content_length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.split(b"\r\n\r\n", 1)[-1], time.monotonic() - started


def _content_length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.e2e
def test_oversized_bodies_get_413_from_the_real_server(daphne_factory, figures):
    server = daphne_factory()
    token = token_for_id(make_sender().pk)
    head = "POST /api/notifications/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\n"
    results = {}
    rss_before = _rss_kb(server.proc.pid)
    for label, size in [("1 MiB + 1", 1024 * 1024 + 1), ("2 MiB", 2 * 1024 * 1024), ("64 MiB", 64 * 1024 * 1024)]:
        chunk = b"x" * (1024 * 1024)
        chunks = [chunk] * (size // len(chunk)) + [b"x" * (size % len(chunk))]
        status, body, seconds = _raw_request(server.port, head.format(t=token) + f"Content-Length: {size}\r\n\r\n", chunks)
        results[label] = (status, round(seconds, 2))
        assert status == 413, (label, status, body[:200])
        assert b"too large" in body
    rss_after = _rss_kb(server.proc.pid)
    # A chunked body has no Content-Length to check up front: still a clear 4xx, never a 5xx.
    body = b'{"recipient": 1, "title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    chunks = [f"{len(body[i:i + 65536]):x}\r\n".encode() + body[i : i + 65536] + b"\r\n" for i in range(0, len(body), 65536)] + [b"0\r\n\r\n"]
    chunked_status, chunked_body, _ = _raw_request(server.port, head.format(t=token) + "Transfer-Encoding: chunked\r\n\r\n", chunks)
    bad_length, _, _ = _raw_request(server.port, head.format(t=token) + "Content-Length: abc\r\n\r\n", [b"{}"])
    health = HttpSender(server.url, token).request_sync("GET", "/healthz")
    figures.update(
        answers={k: v[0] for k, v in results.items()}, seconds={k: v[1] for k, v in results.items()},
        daphne_rss_growth_kb_for_64_mib=rss_after - rss_before, chunked_2_mib=chunked_status, content_length_abc=bad_length,
    )
    assert 400 <= chunked_status < 500, (chunked_status, chunked_body[:200])
    assert bad_length == 400
    assert health[0] == 200


# --- Floods on a real daphne ------------------------------------------------------------------


@pytest.mark.e2e
async def test_a_send_flood_gets_429_with_retry_after_and_recovers(daphne_factory, figures):
    server = daphne_factory(env={"INBOX_THROTTLE_SEND": "20/s", "INBOX_THROTTLE_AUTH": "5/min"})
    sender = await database_sync_to_async(make_sender)()
    (recipient,) = await database_sync_to_async(make_users)(1)
    http = HttpSender(server.url, token_for_id(sender.pk), concurrency=8)
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(http.send({"recipient": recipient.pk, "title": f"f{i}"}) for i in range(200)))
        flood_s = time.monotonic() - started
        statuses = [r[0] for r in results]
        limited = [r for r in results if r[0] == 429]
        retry_after = max(int(r[1]["Retry-After"]) for r in limited)
        await asyncio.sleep(retry_after)
        after_wait = await http.send({"recipient": recipient.pk, "title": "after the wait"})
        # Token requests from one address: limited too.
        token_statuses = [
            (await http.request("POST", "/api/auth/token/", {"username": "nobody", "password": "wrong"}, {"Authorization": ""}))[0]
            for _ in range(8)
        ]
    finally:
        http.close()
    from inbox.models import Notification

    stored = await database_sync_to_async(Notification.objects.count)()
    figures.update(
        sent=200, flood_s=round(flood_s, 2), rate="20/s", answered_201=statuses.count(201), answered_429=len(limited), retry_after_s=retry_after,
        stored=stored, after_retry_after=after_wait[0], token_requests=token_statuses,
    )
    assert set(statuses) == {201, 429}
    assert all(r[1].get("Retry-After", "").isdigit() for r in limited)
    assert all(b"throttled" in r[2].lower() or b"request was throttled" in r[2].lower() for r in limited)
    # A sliding one-second window of 20: at most 20 per started second of the flood.
    assert 20 <= statuses.count(201) <= 20 * (flood_s + 1), (statuses.count(201), flood_s)
    assert stored == statuses.count(201) + 1, "a throttled send stores nothing"
    assert after_wait[0] == 201
    assert token_statuses[:5] == [401] * 5 and set(token_statuses[5:]) == {429}
