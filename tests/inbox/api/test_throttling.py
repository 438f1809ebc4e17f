"""Rate limits: senders, readers and token requests get 429 with Retry-After past their rate."""

import pytest

from inbox.models import Notification
from tests.factories import make_notification


@pytest.fixture
def low_rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"send": "3/min", "read": "4/min", "auth": "2/min"},
    }


def test_a_sender_past_the_send_rate_gets_429_with_retry_after(low_rates, sender_client, alice):
    statuses = [
        sender_client.post("/api/notifications/", {"recipient": "alice", "title": f"n{i}"}, format="json").status_code
        for i in range(3)
    ]
    assert statuses == [201, 201, 201]
    response = sender_client.post("/api/notifications/", {"recipient": "alice", "title": "one too many"}, format="json")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert Notification.objects.count() == 3


def test_the_send_rate_is_per_sender(low_rates, client_for, make_user, alice):
    one = client_for(make_user("service-one", can_send=True))
    two = client_for(make_user("service-two", can_send=True))
    for i in range(3):
        one.post("/api/notifications/", {"recipient": "alice", "title": f"n{i}"}, format="json")
    assert one.post("/api/notifications/", {"recipient": "alice", "title": "x"}, format="json").status_code == 429
    assert two.post("/api/notifications/", {"recipient": "alice", "title": "x"}, format="json").status_code == 201


def test_reading_does_not_use_up_the_send_rate(low_rates, sender_client, alice):
    for _ in range(4):
        assert sender_client.get("/api/notifications/").status_code == 200
    assert sender_client.post("/api/notifications/", {"recipient": "alice", "title": "t"}, format="json").status_code == 201


@pytest.mark.parametrize(
    "method,url",
    [
        ("get", "/api/notifications/"),
        ("get", "/api/notifications/unread-count/"),
        ("get", "/api/me/"),
        ("post", "/api/notifications/read-all/"),
        ("get", "/api/notifications/{id}/"),
        ("post", "/api/notifications/{id}/read/"),
        ("post", "/api/notifications/{id}/unread/"),
    ],
)
def test_a_reader_past_the_read_rate_gets_429_with_retry_after(low_rates, alice_client, alice, method, url):
    n = make_notification(alice)
    url = url.format(id=n.id)
    for _ in range(4):
        assert getattr(alice_client, method)(url).status_code == 200
    response = getattr(alice_client, method)(url)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0


def test_the_read_rate_is_per_user(low_rates, alice_client, bob_client, alice, bob):
    for _ in range(4):
        alice_client.get("/api/notifications/")
    assert alice_client.get("/api/notifications/").status_code == 429
    assert bob_client.get("/api/notifications/").status_code == 200


def test_token_requests_are_limited_per_client_address(low_rates, anon_client, alice):
    body = {"username": "alice", "password": "wrong"}
    assert [anon_client.post("/api/auth/token/", body, format="json").status_code for _ in range(2)] == [401, 401]
    response = anon_client.post("/api/auth/token/", {"username": "alice", "password": "pw-secret-123"}, format="json")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert anon_client.post("/api/auth/token/refresh/", {"refresh": "x"}, format="json").status_code == 429
    other_address = anon_client.post(
        "/api/auth/token/", {"username": "alice", "password": "pw-secret-123"}, format="json", REMOTE_ADDR="10.0.0.7"
    )
    assert other_address.status_code == 200


def test_the_default_test_rates_do_not_throttle(sender_client, alice):
    for i in range(10):
        assert sender_client.post("/api/notifications/", {"recipient": "alice", "title": f"{i}"}, format="json").status_code == 201


def test_a_forged_x_forwarded_for_does_not_escape_the_token_rate(low_rates, anon_client, alice):
    body = {"username": "alice", "password": "wrong"}
    statuses = [
        anon_client.post("/api/auth/token/", body, format="json", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code
        for i in range(4)
    ]
    assert statuses == [401, 401, 429, 429]


def test_the_throttle_store_keeps_the_objects_themselves_and_expires_them():
    from django.core.cache import caches

    from inbox.api.throttle_cache import ObjectLocMemCache

    cache = caches["throttle"]
    assert isinstance(cache, ObjectLocMemCache)
    history = [1.0, 2.0]
    cache.set("k", history, 60)
    assert cache.get("k") is history
    assert cache.add("k", [], 60) is False and cache.add("n", 1, 60) is True and cache.incr("n") == 2
    cache.set("gone", [1.0], 0)
    assert cache.get("gone", "missing") == "missing"


def test_concurrent_requests_of_one_sender_pass_exactly_the_rate(settings, service_account):
    import sys
    import threading

    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from inbox.api.throttles import SendThrottle

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"send": "100/min"}}
    request = Request(APIRequestFactory().post("/api/notifications/"))
    request.user = service_account
    allowed, waits = [], []
    start = threading.Barrier(8)

    def sender():
        start.wait()
        for _ in range(40):
            throttle = SendThrottle()
            if throttle.allow_request(request, None):
                allowed.append(1)
            else:
                waits.append(throttle.wait())

    threads = [threading.Thread(target=sender) for _ in range(8)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible: races show up
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert len(allowed) == 100 and len(waits) == 220
    assert all(0 < w <= 60 for w in waits)


def test_a_readers_history_is_kept_while_thousands_of_other_clients_are_throttled(low_rates, alice_client, alice):
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from inbox.api.throttles import ReadThrottle

    for _ in range(4):
        assert alice_client.get("/api/notifications/").status_code == 200
    others = APIRequestFactory().get("/api/notifications/")
    for i in range(2000):  # other users' reads, one history each
        request = Request(others)
        request.user = type(alice)(pk=10_000_000 + i, username=f"other-{i}")
        assert ReadThrottle().allow_request(request, None)
    assert alice_client.get("/api/notifications/").status_code == 429
