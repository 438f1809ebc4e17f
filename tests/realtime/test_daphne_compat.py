"""
daphne's requests skip Twisted's parsing of form bodies, which daphne never reads
(realtime/daphne_compat.skip_twisted_form_parsing).
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from daphne.http_protocol import WebRequest
from twisted.web import http

from realtime.daphne_compat import skip_twisted_form_parsing


def a_request() -> WebRequest:
    server = SimpleNamespace(protocol_connected=lambda request: None)
    channel = SimpleNamespace(getPeer=lambda: None, getHost=lambda: None, transport=None, factory=SimpleNamespace(server=server))
    return WebRequest(channel)


def test_a_daphne_request_does_not_parse_a_form_post_and_keeps_its_body(monkeypatch):
    skip_twisted_form_parsing()
    skip_twisted_form_parsing()  # twice is harmless

    def refuse(line):
        raise AssertionError(f"Twisted parsed the Content-Type {line!r}")

    monkeypatch.setattr(http, "_parseContentType", refuse)
    request = a_request()
    processed = []
    monkeypatch.setattr(request, "process", lambda: processed.append(True))
    body = b"recipient=alice&title=hello"
    request.requestHeaders.setRawHeaders(b"Content-Type", [b"application/x-www-form-urlencoded"])
    request.requestHeaders.setRawHeaders(b"Content-Length", [str(len(body)).encode()])
    request.content = io.BytesIO()
    request.content.write(body)  # as Twisted's handleContentChunk does
    request.requestReceived(b"POST", b"/api/notifications/", b"HTTP/1.1")

    assert processed == [True]
    assert request.args == {}
    assert request.content.read() == body


def test_without_the_patch_twisted_would_parse_it(monkeypatch):
    # The check above can fail: an unpatched Twisted request does call the parser.
    seen = []
    monkeypatch.setattr(http, "_parseContentType", lambda line: seen.append(line) or b"application/x-www-form-urlencoded")
    channel = SimpleNamespace(getPeer=lambda: None, getHost=lambda: None, transport=None)
    request = http.Request(channel)
    monkeypatch.setattr(request, "process", lambda: None)
    body = b"a=1"
    request.requestHeaders.setRawHeaders(b"Content-Type", [b"application/x-www-form-urlencoded"])
    request.requestHeaders.setRawHeaders(b"Content-Length", [b"3"])
    request.content = io.BytesIO()
    request.content.write(body)  # as Twisted's handleContentChunk does
    request.requestReceived(b"POST", b"/", b"HTTP/1.1")
    assert seen == [b"application/x-www-form-urlencoded"]
    assert request.args == {b"a": [b"1"]}
