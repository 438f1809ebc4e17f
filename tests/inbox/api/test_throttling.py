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


# --- The client address behind proxies (inbox.api.throttles.client_address) -------------------


@pytest.fixture
def num_proxies(settings):
    def set_to(n):
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": n}

    return set_to


def _address(remote, xff=None):
    from django.test import RequestFactory

    from inbox.api.throttles import client_address

    extra = {"REMOTE_ADDR": remote}
    if xff is not None:
        extra["HTTP_X_FORWARDED_FOR"] = xff
    return client_address(RequestFactory().post("/api/auth/token/", **extra))


def test_behind_n_proxies_the_client_is_the_nth_entry_from_the_right(num_proxies):
    num_proxies(1)
    assert _address("10.0.0.2", "198.51.100.7, 203.0.113.9") == "203.0.113.9"
    # daphne --proxy-headers made the leftmost (forged) entry the socket address: ignored.
    assert _address("198.51.100.7", "198.51.100.7, 203.0.113.9") == "203.0.113.9"
    assert _address("10.0.0.2") == "10.0.0.2"  # not through the proxy
    num_proxies(2)
    assert _address("10.0.0.3", "198.51.100.7, 203.0.113.9, 10.0.0.2") == "203.0.113.9"


def test_with_no_trusted_proxy_an_address_taken_from_the_header_is_one_shared_client(num_proxies):
    from inbox.api.throttles import UNTRUSTED_FORWARDED

    num_proxies(0)
    assert _address("127.0.0.1", "198.51.100.7") == "127.0.0.1"  # the server left the socket address alone
    assert _address("198.51.100.7", "198.51.100.7") == UNTRUSTED_FORWARDED  # daphne --proxy-headers
    assert _address("198.51.100.8", "198.51.100.7, 198.51.100.8") == UNTRUSTED_FORWARDED  # uvicorn --proxy-headers
    assert _address("127.0.0.1") == "127.0.0.1"


def test_addresses_are_counted_in_one_spelling_and_anything_else_is_a_bounded_key(num_proxies):
    num_proxies(1)
    assert _address("10.0.0.2", "::ffff:203.0.113.9") == "203.0.113.9"
    assert _address("10.0.0.2", "203.0.113.9:51234") == "203.0.113.9"
    assert _address("10.0.0.2", "[2001:DB8::1]:443") == "2001:db8::1"
    odd = _address("10.0.0.2", "x" * 10_000)
    assert odd.startswith("unparsed-") and len(odd) < 50


# --- The admin's sign-in: the same limits as the token endpoint -------------------------------


def _admin_login(client, username, password, **extra):
    return client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"}, **extra)


def test_admin_sign_ins_past_the_auth_rate_are_a_429_even_with_the_right_password(settings, client, staff_user):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"auth": "5/min"}}
    assert [_admin_login(client, "operator", f"wrong-{i}").status_code for i in range(5)] == [200] * 5  # the form again
    response = _admin_login(client, "operator", "pw-secret-123")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still signed out
    # Another address signs in.
    assert _admin_login(client, "operator", "pw-secret-123", REMOTE_ADDR="10.0.0.7").status_code == 302


def test_the_token_endpoint_and_the_admin_sign_in_share_one_budget_per_address(settings, client, anon_client, staff_user):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"auth": "4/min"}}
    for i in range(2):
        assert anon_client.post("/api/auth/token/", {"username": "operator", "password": "x"}, format="json").status_code == 401
        assert _admin_login(client, "operator", "x").status_code == 200
    assert anon_client.post("/api/auth/token/", {"username": "operator", "password": "pw-secret-123"}, format="json").status_code == 429
    assert _admin_login(client, "operator", "pw-secret-123").status_code == 429


def test_looking_at_the_admin_sign_in_page_uses_no_budget(settings, client, staff_user):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"auth": "1/min"}}
    for _ in range(5):
        assert client.get("/admin/login/").status_code == 200
    assert _admin_login(client, "operator", "pw-secret-123").status_code == 302


# --- Password checks at once ------------------------------------------------------------------


def test_password_checks_past_the_process_slots_are_a_429_at_once(settings, client, anon_client, staff_user):
    import time

    from inbox.api.throttles import password_check_slot

    settings.INBOX = {**settings.INBOX, "PASSWORD_CHECKS": 1}
    with password_check_slot():  # another request is hashing
        started = time.monotonic()
        token = anon_client.post("/api/auth/token/", {"username": "operator", "password": "pw-secret-123"}, format="json")
        login = _admin_login(client, "operator", "pw-secret-123")
        elapsed = time.monotonic() - started
    assert (token.status_code, token["Retry-After"]) == (429, "1")
    assert "retry" in token.json()["detail"]
    assert (login.status_code, login["Retry-After"]) == (429, "1")
    assert elapsed < 1.0
    # The slot is free again.
    assert anon_client.post("/api/auth/token/", {"username": "operator", "password": "pw-secret-123"}, format="json").status_code == 200
    assert _admin_login(client, "operator", "pw-secret-123").status_code == 302


def test_the_slots_let_exactly_their_number_of_checks_run_at_once(settings):
    import threading

    from inbox.api.throttles import PasswordChecksBusy, password_check_slot

    settings.INBOX = {**settings.INBOX, "PASSWORD_CHECKS": 3}
    inside, refused = threading.Barrier(4), []
    release = threading.Event()

    def check():
        try:
            with password_check_slot():
                inside.wait(5)
                release.wait(5)
        except PasswordChecksBusy:
            refused.append(1)

    threads = [threading.Thread(target=check) for _ in range(3)]
    for t in threads:
        t.start()
    inside.wait(5)  # three are in
    check()  # a fourth is refused at once
    release.set()
    for t in threads:
        t.join()
    assert refused == [1]
    with password_check_slot():  # all released
        pass


# --- Tokens are never cached ------------------------------------------------------------------


def test_token_responses_are_never_cached(anon_client, alice):
    granted = anon_client.post("/api/auth/token/", {"username": "alice", "password": "pw-secret-123"}, format="json")
    refused = anon_client.post("/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json")
    refreshed = anon_client.post("/api/auth/token/refresh/", {"refresh": granted.json()["refresh"]}, format="json")
    bad_refresh = anon_client.post("/api/auth/token/refresh/", {"refresh": "x"}, format="json")
    assert [r.status_code for r in (granted, refused, refreshed, bad_refresh)] == [200, 401, 200, 401]
    for response in (granted, refused, refreshed, bad_refresh):
        assert "no-store" in response["Cache-Control"]
        assert "private" in response["Cache-Control"]
