"""
Bad input gets a clear 4xx with field errors, never a 500: send bodies, headers, query parameters and URLs.
"""

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from inbox.models import Notification
from tests.factories import make_notification, make_notifications


def send_raw(client, raw: bytes | str, content_type="application/json", **headers):
    return client.generic("POST", "/api/notifications/", raw, content_type=content_type, **headers)


def nested(depth: int, leaf="x") -> str:
    """A JSON value nested ``depth`` levels deep, as raw text."""
    return "[" * depth + f'"{leaf}"' + "]" * depth


FIELD_ERRORS = [
    ("unknown recipient", {"recipient": "nobody", "title": "T"}, "recipient"),
    ("unknown recipient id", {"recipient": 987654321, "title": "T"}, "recipient"),
    ("recipient id zero", {"recipient": 0, "title": "T"}, "recipient"),
    ("recipient id too large", {"recipient": 2**63, "title": "T"}, "recipient"),
    ("recipient is a bool", {"recipient": True, "title": "T"}, "recipient"),
    ("recipient is a float", {"recipient": 1.5, "title": "T"}, "recipient"),
    ("recipient is an object", {"recipient": {"id": 1}, "title": "T"}, "recipient"),
    ("recipient is empty", {"recipient": "", "title": "T"}, "recipient"),
    ("recipient has a NUL", {"recipient": "ali\x00ce", "title": "T"}, "recipient"),
    ("recipient name too long", {"recipient": "a" * 151, "title": "T"}, "recipient"),
    ("recipients not a list", {"recipients": "alice", "title": "T"}, "recipients"),
    ("recipients empty", {"recipients": [], "title": "T"}, "recipients"),
    ("recipients with an unknown one", {"recipients": ["alice", "nobody"], "title": "T"}, "recipients"),
    ("recipients with a bad item", {"recipients": ["alice", None], "title": "T"}, "recipients"),
    ("both recipient and recipients", {"recipient": "alice", "recipients": ["alice"], "title": "T"}, "recipient"),
    ("neither recipient nor recipients", {"title": "T"}, "recipient"),
    ("no title", {"recipient": "alice"}, "title"),
    ("empty title", {"recipient": "alice", "title": ""}, "title"),
    ("blank title", {"recipient": "alice", "title": "   "}, "title"),
    ("null title", {"recipient": "alice", "title": None}, "title"),
    ("title is a list", {"recipient": "alice", "title": ["T"]}, "title"),
    ("title is an object", {"recipient": "alice", "title": {"t": 1}}, "title"),
    ("title too long", {"recipient": "alice", "title": "x" * 201}, "title"),
    ("title with NUL", {"recipient": "alice", "title": "a\x00b"}, "title"),
    ("message too long", {"recipient": "alice", "title": "T", "message": "x" * 10_001}, "message"),
    ("message with NUL", {"recipient": "alice", "title": "T", "message": "\x00"}, "message"),
    ("message is a list", {"recipient": "alice", "title": "T", "message": ["m"]}, "message"),
    ("category not a slug", {"recipient": "alice", "title": "T", "category": "no spaces allowed"}, "category"),
    ("category too long", {"recipient": "alice", "title": "T", "category": "c" * 51}, "category"),
    ("data too large", {"recipient": "alice", "title": "T", "data": {"blob": "x" * (16 * 1024)}}, "data"),
    ("data is a list", {"recipient": "alice", "title": "T", "data": [1, 2]}, "data"),
    ("data is a string", {"recipient": "alice", "title": "T", "data": "{}"}, "data"),
    ("data is null", {"recipient": "alice", "title": "T", "data": None}, "data"),
    ("data with a NUL value", {"recipient": "alice", "title": "T", "data": {"k": "a\x00"}}, "data"),
    ("data with a NUL key", {"recipient": "alice", "title": "T", "data": {"k\x00": 1}}, "data"),
    ("data with a nested NUL", {"recipient": "alice", "title": "T", "data": {"a": [{"b": "\x00"}]}}, "data"),
    ("link not a URL", {"recipient": "alice", "title": "T", "link": "not a url"}, "link"),
    ("link javascript", {"recipient": "alice", "title": "T", "link": "javascript:alert(1)"}, "link"),
    ("link too long", {"recipient": "alice", "title": "T", "link": "https://e.com/" + "a" * 2048}, "link"),
    ("expires_at in the past", {"recipient": "alice", "title": "T", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ("expires_at not a date", {"recipient": "alice", "title": "T", "expires_at": "tomorrow"}, "expires_at"),
    ("expires_at a number", {"recipient": "alice", "title": "T", "expires_at": 12345}, "expires_at"),
    ("expires_at beyond year 9999", {"recipient": "alice", "title": "T", "expires_at": "9999-12-31T23:59:59-12:00"}, "expires_at"),
]


@pytest.mark.parametrize("case,body,field", FIELD_ERRORS, ids=[c[0] for c in FIELD_ERRORS])
def test_a_bad_send_is_400_with_a_field_error(sender_api, alice, case, body, field):
    response = sender_api.post("/api/notifications/", body, format="json")
    assert response.status_code == 400, response.content[:300]
    assert field in response.json(), response.json()
    assert not Notification.objects.exists()


def test_expires_at_just_now_is_in_the_past(sender_api, alice):
    response = sender_api.post(
        "/api/notifications/", {"recipient": "alice", "title": "T", "expires_at": timezone.now().isoformat()}, format="json"
    )
    assert response.status_code == 400
    assert "expires_at" in response.json()


def test_exactly_the_limits_are_accepted(sender_api, alice):
    body = {
        "recipient": "alice",
        "title": "x" * 200,
        "message": "m" * 10_000,
        "data": {"blob": "d" * (16 * 1024 - 20)},
        "expires_at": (timezone.now() + timedelta(minutes=1)).isoformat(),
    }
    assert sender_api.post("/api/notifications/", body, format="json").status_code == 201


def test_recipients_over_the_limit_are_400(sender_api, alice):
    response = sender_api.post("/api/notifications/", {"recipients": ["alice"] * 10_001, "title": "T"}, format="json")
    assert response.status_code == 400
    assert "recipients" in response.json()
    assert "10000" in str(response.json()["recipients"])


@pytest.mark.parametrize("depth", [33, 100, 300, 1000, 5000])
def test_deeply_nested_data_is_400(sender_api, alice, depth):
    raw = '{"recipient": "alice", "title": "T", "data": {"deep": ' + nested(depth) + "}}"
    response = send_raw(sender_api, raw)
    assert response.status_code == 400, response.content[:300]
    assert not Notification.objects.exists()


def test_data_may_nest_32_levels_and_no_more(sender_api, alice):
    body = '{"recipient": "alice", "title": "T", "data": {"deep": %s}}'
    assert send_raw(sender_api, body % nested(31)).status_code == 201
    response = send_raw(sender_api, body % nested(32))
    assert response.status_code == 400
    assert "deeper than 32" in response.json()["data"][0]


@pytest.mark.parametrize("depth", [300, 1000])
def test_deeply_nested_data_with_an_idempotency_key_is_400(sender_api, alice, depth):
    raw = '{"recipient": "alice", "title": "T", "data": {"deep": ' + nested(depth) + "}}"
    response = send_raw(sender_api, raw, HTTP_IDEMPOTENCY_KEY="deep")
    assert response.status_code == 400, response.content[:300]
    assert "data" in response.json()


@pytest.mark.parametrize("depth", [300, 1000])
def test_a_deeply_nested_title_is_400(sender_api, alice, depth):
    raw = '{"recipient": "alice", "title": ' + nested(depth) + "}"
    assert send_raw(sender_api, raw).status_code == 400
    assert send_raw(sender_api, raw, HTTP_IDEMPOTENCY_KEY="deep-title").status_code == 400


@pytest.mark.parametrize("path", ["/api/auth/token/", "/api/auth/token/refresh/", "/api/notifications/read-all/"])
@pytest.mark.parametrize("depth", [100, 1000, 5000])
def test_a_deeply_nested_body_is_400_on_every_endpoint(alice_api, alice, path, depth):
    for raw in ('{"username": %s, "password": "x", "refresh": "x", "category": "x"}' % nested(depth), nested(depth)):
        response = alice_api.generic("POST", path, raw, content_type="application/json")
        assert response.status_code == 400, (response.status_code, response.content[:300])


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"recipient": "alice", "title": "T",}',
        b"not json",
        b'{"recipient": "alice", "title": "\xff\xfe"}',
        b'{"recipient": "alice", "title": NaN}',
        b'{"recipient": "alice", "title": "\\ud800"}',
        b"[]",
        b'"a string"',
        b"123",
        b"null",
        b'{"recipient": "alice", "title": "T", "data": {"n": 1e999}}',
        b'{"recipient": "alice", "title": "T"}{"second": 1}',
    ],
)
def test_malformed_or_non_object_json_is_400(sender_api, alice, raw):
    response = send_raw(sender_api, raw)
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert not Notification.objects.exists()


@pytest.mark.parametrize(
    "number", ["123456789012345678901234567890", "18446744073709551615", "9223372036854775808", "-9223372036854775809", "1e308"]
)
def test_huge_numbers_in_data_never_break_the_send_or_the_list(sender_api, alice, client_for, number):
    raw = '{"recipient": "alice", "title": "T", "data": {"n": %s}}' % number
    response = send_raw(sender_api, raw)
    assert response.status_code in (201, 400), response.content[:300]
    listed = client_for(alice).get("/api/notifications/")
    assert listed.status_code == 200
    if response.status_code == 201:
        assert float(listed.json()["results"][0]["data"]["n"]) == float(number)


def test_an_empty_body_is_400(sender_api, alice):
    response = send_raw(sender_api, b"")
    assert response.status_code == 400


def test_a_form_encoded_body_is_415(sender_api, alice):
    response = send_raw(sender_api, "recipient=alice&title=T", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_a_body_over_one_mebibyte_is_413(sender_api, alice):
    raw = '{"recipient": "alice", "title": "T", "message": "' + "x" * (1024 * 1024) + '"}'
    response = send_raw(sender_api, raw)
    assert response.status_code == 413
    assert not Notification.objects.exists()


def test_a_body_over_one_mebibyte_is_413_on_every_endpoint(alice_api, alice):
    raw = b"{" + b" " * (1024 * 1024 + 1) + b"}"
    response = alice_api.generic("POST", "/api/notifications/read-all/", raw, content_type="application/json")
    assert response.status_code == 413
    assert alice_api.generic("POST", "/api/auth/token/", raw, content_type="application/json").status_code == 413


def test_a_bad_content_length_is_400(alice_api, alice):
    response = alice_api.generic("POST", "/api/notifications/read-all/", b"{}", content_type="application/json", CONTENT_LENGTH="abc")
    assert response.status_code == 400


# --- Query parameters and URLs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "query,param",
    [
        ("unread=maybe", "unread"),
        ("unread=%00", "unread"),
        ("after=abc", "after"),
        ("after=-1", "after"),
        ("after=1.5", "after"),
        ("after=9223372036854775808", "after"),
        ("after=99999999999999999999999999999999", "after"),
        ("after=%C2%B2", "after"),
        ("after=%D9%A3", "after"),
        ("category=" + "c" * 51, "category"),
    ],
)
def test_a_bad_query_parameter_is_400(alice_api, alice, query, param):
    response = alice_api.get(f"/api/notifications/?{query}")
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert param in response.json()


def test_the_largest_id_is_a_valid_after(alice_api, alice):
    make_notification(alice)
    response = alice_api.get("/api/notifications/?after=9223372036854775807")
    assert response.status_code == 200
    assert response.json()["results"] == []


@pytest.mark.parametrize("category", ["%00", "a%00b", "%F0%9F%92%A5", "x%27%3B--", "two%20words"])
def test_a_category_filter_that_is_not_a_slug_is_400(alice_api, alice, category):
    make_notification(alice)
    response = alice_api.get(f"/api/notifications/?category={category}")
    assert response.status_code == 400
    assert "category" in response.json()


def _cursor(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "%FF%FE",
        _cursor("p=abc"),
        _cursor("p=1.5"),
        _cursor("p=-5"),
        _cursor("p=99999999999999999999999999"),
        _cursor("o=-1"),
        _cursor("o=abc&p=5"),
        _cursor("r=x"),
        _cursor("p=%00"),
    ],
)
def test_a_bad_cursor_is_a_4xx(alice_api, alice, cursor):
    make_notifications(alice, 3)
    response = alice_api.get(f"/api/notifications/?cursor={cursor}")
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])


@pytest.mark.parametrize("method,suffix", [("get", ""), ("delete", ""), ("post", "read/"), ("post", "unread/")])
@pytest.mark.parametrize("pk", ["9223372036854775807", "9223372036854775808", "99999999999999999999999999999999999"])
def test_ids_beyond_the_largest_bigint_in_the_url_are_404(alice_api, alice, method, suffix, pk):
    response = getattr(alice_api, method)(f"/api/notifications/{pk}/{suffix}")
    assert response.status_code == 404


@pytest.mark.parametrize("path", ["/api/notifications/abc/", "/api/notifications/-1/", "/api/notifications/1.5/"])
def test_non_numeric_ids_in_the_url_are_404(alice_api, alice, path):
    assert alice_api.get(path).status_code == 404


def test_a_wrong_method_is_405(alice_api, alice):
    assert alice_api.put("/api/notifications/", {}, format="json").status_code == 405
    assert alice_api.get("/api/notifications/read-all/").status_code == 405
    assert alice_api.patch("/api/notifications/1/", {}, format="json").status_code == 405
