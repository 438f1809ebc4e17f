"""
Web Push end to end against a push service this test runs on loopback: it receives the encrypted
request, and the test decrypts it with the subscription's keys (http_ece) and checks the VAPID
signature. An ack in time means no request; a 410 removes the subscription; a 503 is retried.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone
from py_vapid import Vapid02

from inbox import services
from inbox.fallback.push import b64url, b64url_decode
from inbox.models import CategoryPreference, DeliveryProfile, FallbackDelivery, PushSubscription

from .support import outcomes, run_due, scheduled, send, time_passes

pytestmark = pytest.mark.django_db
URL = "/api/push-subscriptions/"
VAPID_KEY = b64url(ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value.to_bytes(32, "big"))


class PushService:
    """A push service on 127.0.0.1: records each POST and answers ``status`` (201 unless told)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 201
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                service.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                self.send_response(service.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Browser:
    """The browser's half of a subscription: its ECDH key pair and auth secret (RFC 8291)."""

    def __init__(self, endpoint: str):
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.endpoint = endpoint

    def subscription_json(self) -> dict:
        public = self.private_key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "expirationTime": None, "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)}}

    def decrypt(self, body: bytes) -> dict:
        return json.loads(http_ece.decrypt(body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"))


@pytest.fixture
def push_service(settings):
    settings.INBOX = {**settings.INBOX, "VAPID_PRIVATE_KEY": VAPID_KEY, "VAPID_SUBJECT": "mailto:ops@example.com", "PUSH_SERVICE_HOSTS": ["127.0.0.1"]}
    service = PushService()
    yield service
    service.stop()


@pytest.fixture
def dana_browser(push_service, make_user, client_for):
    dana = make_user("dana")
    browser = Browser(f"http://127.0.0.1:{push_service.port}/push/dana-chrome")
    r = client_for(dana).post(URL, browser.subscription_json(), format="json")
    assert r.status_code == 201, r.content
    return dana, browser


def test_a_person_with_no_tab_open_gets_one_encrypted_vapid_signed_push(dana_browser, push_service):
    dana, browser = dana_browser
    n = send([dana], title="Your order shipped", message="Arrives Tuesday", category="order", link="https://shop.example.com/o/1")[0]
    time_passes(30)
    assert outcomes(run_due(), "push_fallback") == ["sent"]
    (request,) = push_service.requests
    assert request["path"] == "/push/dana-chrome"
    assert request["headers"]["content-encoding"] == "aes128gcm"
    assert request["headers"]["ttl"] == str(24 * 3600)
    assert request["headers"]["topic"] == f"inbox-{n.pk}"
    pushed = browser.decrypt(request["body"])
    assert pushed["notification"] == {
        "id": n.pk, "title": "Your order shipped", "message": "Arrives Tuesday", "category": "order",
        "link": "https://shop.example.com/o/1", "created_at": n.created_at.isoformat().replace("+00:00", "Z"),
    }
    authorization = request["headers"]["authorization"]
    assert Vapid02.verify(authorization)
    claims = json.loads(b64url_decode(authorization.split("t=")[1].split(",")[0].split(".")[1]))
    assert claims["aud"] == f"http://127.0.0.1:{push_service.port}" and claims["sub"] == "mailto:ops@example.com"
    assert FallbackDelivery.objects.get(notification=n, channel="web_push").status == "sent"
    time_passes(3600)
    run_due()
    assert len(push_service.requests) == 1  # at most once


def test_the_service_worker_acks_a_shown_push_with_the_token_it_carries(dana_browser, push_service, client):
    dana, browser = dana_browser
    n = send([dana])[0]
    time_passes(30)
    run_due()
    token = browser.decrypt(push_service.requests[0]["body"])["ack"]
    r = client.post("/push/ack/", {"ack": token}, content_type="application/json")
    assert r.status_code == 200 and r.json() == {"acked": [n.pk]}
    n.refresh_from_db()
    assert n.delivered_at is not None
    for bad in ({"ack": token[:-3] + "abc"}, {"ack": 5}, ["x"]):
        assert client.post("/push/ack/", bad, content_type="application/json").status_code == 400
    assert client.post("/push/ack/", b"{not json", content_type="application/json").status_code == 400


def test_a_socket_that_acks_in_time_means_no_push_request(dana_browser, push_service):
    dana, _ = dana_browser
    n = send([dana])[0]
    services.notification_ack(user=dana, ids=[n.pk])
    time_passes(30)
    assert outcomes(run_due(), "push_fallback") == ["acked"]
    assert push_service.requests == []


def test_a_subscription_the_push_service_answers_410_for_is_removed(dana_browser, push_service):
    dana, _ = dana_browser
    push_service.status = 410
    send([dana])
    time_passes(30)
    assert outcomes(run_due(), "push_fallback") == ["undelivered"]
    assert len(push_service.requests) == 1
    assert not PushSubscription.objects.exists()


def test_a_push_service_that_is_down_is_retried_later_and_pushed_once(dana_browser, push_service):
    dana, browser = dana_browser
    push_service.status = 503
    send([dana], title="Retry me")
    time_passes(30)
    assert outcomes(run_due(), "push_fallback") == ["retrying"]
    push_service.status = 201
    time_passes(30)
    assert outcomes(run_due(), "push_fallback") == ["sent"]
    assert [browser.decrypt(r["body"])["notification"]["title"] for r in push_service.requests[1:]] == ["Retry me"]
    time_passes(3600)
    run_due()
    assert len(push_service.requests) == 2


def test_web_push_turned_off_for_a_category_or_quiet_hours_hold_the_push(dana_browser, push_service):
    dana, _ = dana_browser
    CategoryPreference.objects.create(user=dana, category="marketing", web_push=False)
    send([dana], category="marketing")
    time_passes(30)
    assert outcomes(run_due(), "push_fallback") == ["skipped"]
    DeliveryProfile.objects.create(
        user=dana, quiet_start=(timezone.now() - timedelta(hours=1)).time(), quiet_end=(timezone.now() + timedelta(hours=1)).time()
    )
    send([dana], category="order")
    time_passes(30)
    assert outcomes(run_due(), "push_fallback") == ["postponed"]
    assert push_service.requests == []
    assert len(scheduled("push_fallback")) == 1


def test_the_api_gives_the_vapid_key_lists_and_deletes_only_ones_own_subscriptions(dana_browser, client_for, make_user):
    dana, browser = dana_browser
    body = client_for(dana).get(URL).json()
    assert body["subscriptions"][0]["endpoint"] == browser.endpoint
    assert len(b64url_decode(body["vapid_public_key"])) == 65
    erin = make_user("erin")
    assert client_for(erin).get(URL).json()["subscriptions"] == []
    assert client_for(erin, raise_exceptions=False).delete(URL, {"endpoint": browser.endpoint}, format="json").status_code == 404
    assert client_for(dana).delete(URL, {"endpoint": browser.endpoint}, format="json").status_code == 204
    assert not PushSubscription.objects.exists()


def _good(port=1234):
    return Browser(f"http://127.0.0.1:{port}/push/x").subscription_json()


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda s: {**s, "endpoint": "http://10.0.0.5/push/x"}, "endpoint"),  # not a push service
        (lambda s: {**s, "endpoint": "https://push.evil.example/x"}, "endpoint"),
        (lambda s: {**s, "endpoint": "not a url"}, "endpoint"),
        (lambda s: {**s, "endpoint": 42}, "endpoint"),
        (lambda s: {k: v for k, v in s.items() if k != "keys"}, "keys"),
        (lambda s: {**s, "keys": {**s["keys"], "auth": b64url(b"short")}}, "keys"),
        (lambda s: {**s, "keys": {**s["keys"], "p256dh": b64url(b"\x04" + b"\x01" * 64)}}, "keys"),  # not on the curve
        (lambda s: {**s, "keys": {**s["keys"], "p256dh": "!!not base64!!"}}, "keys"),
        (lambda s: ["endpoint"], "non_field_errors"),
    ],
)
def test_bad_subscription_json_is_a_400_that_names_the_field_and_stores_nothing(push_service, make_user, client_for, change, field):
    r = client_for(make_user(), raise_exceptions=False).post(URL, change(_good()), format="json")
    assert r.status_code == 400, r.content
    assert field in r.json()
    assert not PushSubscription.objects.exists()


def test_without_vapid_keys_subscribing_is_a_409_and_no_push_is_attempted(make_user, client_for, settings):
    settings.INBOX = {**settings.INBOX, "VAPID_PRIVATE_KEY": "", "PUSH_SERVICE_HOSTS": ["127.0.0.1"]}
    user = make_user()
    assert client_for(user, raise_exceptions=False).post(URL, _good(), format="json").status_code == 409
    assert client_for(user).get(URL).json()["vapid_public_key"] is None
    send([user])
    time_passes(30)
    assert outcomes(run_due(), "push_fallback") == ["not_configured"]


def test_inbox_vapid_prints_a_key_pair_the_push_sender_accepts(settings):
    from io import StringIO

    from django.core.management import call_command

    from inbox.fallback.push import vapid_public_key

    out = StringIO()
    call_command("inbox_vapid", stdout=out)
    private = next(line.split("=", 1)[1] for line in out.getvalue().splitlines() if line.startswith("INBOX_VAPID_PRIVATE_KEY="))
    settings.INBOX = {**settings.INBOX, "VAPID_PRIVATE_KEY": private}
    assert vapid_public_key() in out.getvalue()
