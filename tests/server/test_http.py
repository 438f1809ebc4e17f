"""The HTTP side under ASGI: each request runs in one pooled thread (server/http.py)."""

import orjson
import pytest
from asgiref.testing import ApplicationCommunicator

from server.http import PooledASGIHandler

pytestmark = pytest.mark.django_db(transaction=True)


def _scope(method: str, path: str, headers=()):
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }


async def _request(app, scope, chunks):
    comm = ApplicationCommunicator(app, scope)
    for i, chunk in enumerate(chunks):
        await comm.send_input({"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1})
    start = await comm.receive_output(10)
    body = b""
    while True:
        message = await comm.receive_output(10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await comm.wait(10)
    return start["status"], dict(start["headers"]), body


@pytest.fixture
def app():
    handler = PooledASGIHandler(threads=2)
    yield handler
    handler.executor.shutdown(wait=True)


async def test_a_request_is_answered_from_a_pooled_thread(app):
    status, _, body = await _request(app, _scope("GET", "/healthz"), [b""])
    assert status == 200, body


async def test_a_body_without_length_that_grows_past_the_limit_is_413_without_reading_the_rest(app, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    comm = ApplicationCommunicator(app, _scope("POST", "/api/notifications/", [(b"content-type", b"application/json")]))
    for _ in range(3):  # 1,200 bytes in chunks, no Content-Length (chunked upload)
        await comm.send_input({"type": "http.request", "body": b"x" * 400, "more_body": True})
    start = await comm.receive_output(10)
    body = (await comm.receive_output(10))["body"]
    assert start["status"] == 413
    assert orjson.loads(body) == {"detail": "The request body is too large (limit 1000 bytes)."}
    await comm.wait(10)  # answered while the client still had more to send


async def test_a_client_that_leaves_before_its_body_is_complete_gets_nothing_and_breaks_nothing(app):
    comm = ApplicationCommunicator(app, _scope("POST", "/api/notifications/"))
    await comm.send_input({"type": "http.request", "body": b"{", "more_body": True})
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait(10)
    assert await comm.receive_nothing()
    status, _, _ = await _request(app, _scope("GET", "/healthz"), [b""])
    assert status == 200


async def test_a_chunked_body_without_content_length_reaches_the_view_whole(app, service_account, token_for, alice):
    sender = service_account
    payload = orjson.dumps({"recipient": "alice", "title": "in three parts"})
    chunks = [payload[:5], payload[5:10], payload[10:]]
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {token_for(sender)}".encode())]
    status, _, body = await _request(app, _scope("POST", "/api/notifications/", headers), chunks)
    assert status == 201, body
    assert orjson.loads(body)["title"] == "in three parts"

