"""Content negotiation: the shortcut answers as DRF's own negotiation would, and only where it is sure."""

import pytest
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from inbox.api.negotiation import JSONFirstContentNegotiation
from inbox.api.renderers import FastJSONRenderer

RENDERERS = [FastJSONRenderer(), BrowsableAPIRenderer()]


def drf_request(accept=None, query=""):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    return Request(APIRequestFactory().post(f"/api/notifications/{query}", {}, format="json", **headers))


def negotiate(negotiation, request, renderers=RENDERERS):
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers)
    except NotAcceptable:
        return "406"
    return type(renderer).__name__, media_type


@pytest.mark.parametrize(
    "accept, query",
    [
        (None, ""),
        ("*/*", ""),
        ("application/json", ""),
        ("application/json; indent=4", ""),
        ("text/html,application/xhtml+xml,*/*;q=0.8", ""),
        ("text/html", ""),
        ("application/xml", ""),
        ("*/*", "?format=api"),
        ("application/json", "?format=json"),
    ],
)
def test_the_shortcut_answers_as_drf_does(accept, query):
    ours = negotiate(JSONFirstContentNegotiation(), drf_request(accept, query))
    drfs = negotiate(DefaultContentNegotiation(), drf_request(accept, query))
    assert ours == drfs


def test_with_json_only_an_unacceptable_accept_is_still_refused():
    assert negotiate(JSONFirstContentNegotiation(), drf_request("application/xml"), [FastJSONRenderer()]) == "406"


def test_the_api_answers_406_to_a_client_that_accepts_no_json(sender_client, alice):
    response = sender_client.post("/api/notifications/", {"recipient": "alice", "title": "x"}, format="json", HTTP_ACCEPT="application/xml")
    assert response.status_code == 406


def test_a_plain_send_is_answered_in_json(sender_client, alice):
    response = sender_client.post("/api/notifications/", {"recipient": "alice", "title": "x"}, format="json", HTTP_ACCEPT="*/*")
    assert response.status_code == 201 and response["Content-Type"] == "application/json"


def test_the_shortcut_skips_drfs_parsing_of_the_accept_header(monkeypatch):
    parsed = []
    monkeypatch.setattr(DefaultContentNegotiation, "_get_parsed_accept_list", lambda self, request: parsed.append(1) or [])
    with pytest.raises(NotAcceptable):
        JSONFirstContentNegotiation().select_renderer(drf_request("text/html"), [FastJSONRenderer()])
    assert parsed == [1]
    assert JSONFirstContentNegotiation().select_renderer(drf_request("*/*"), [FastJSONRenderer()])[1] == "application/json"
    assert parsed == [1]
