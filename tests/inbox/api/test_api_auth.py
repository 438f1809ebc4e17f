"""JWT sign-in (/api/auth/token/, /api/auth/token/refresh/), /api/me/, and what an unauthenticated client gets."""

import time
from datetime import timedelta

import pytest
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tests.factories import make_notification

PROTECTED = [
    ("get", "/api/me/"),
    ("get", "/api/notifications/"),
    ("post", "/api/notifications/"),
    ("get", "/api/notifications/unread-count/"),
    ("post", "/api/notifications/read-all/"),
    ("get", "/api/notifications/1/"),
    ("delete", "/api/notifications/1/"),
    ("post", "/api/notifications/1/read/"),
    ("post", "/api/notifications/1/unread/"),
]


def test_a_user_gets_an_access_and_a_refresh_token_with_username_and_password(anon_client, alice):
    response = anon_client.post("/api/auth/token/", {"username": "alice", "password": "pw-secret-123"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert str(AccessToken(body["access"])["user_id"]) == str(alice.pk)
    assert RefreshToken(body["refresh"])


def test_the_access_token_signs_the_user_in(anon_client, alice):
    tokens = anon_client.post("/api/auth/token/", {"username": "alice", "password": "pw-secret-123"}, format="json").json()
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    response = anon_client.get("/api/me/")
    assert response.status_code == 200
    assert response.json() == {"id": alice.pk, "username": "alice", "can_send": False, "external_id": None}


def test_a_wrong_password_gets_401(anon_client, alice):
    response = anon_client.post("/api/auth/token/", {"username": "alice", "password": "nope"}, format="json")
    assert response.status_code == 401


def test_an_inactive_user_gets_no_token(anon_client, make_user):
    make_user("carol", is_active=False)
    response = anon_client.post("/api/auth/token/", {"username": "carol", "password": "pw-secret-123"}, format="json")
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [{}, {"username": "alice"}, {"password": "x"}, {"username": ["alice"], "password": "pw-secret-123"}, {"username": "a\x00", "password": "p"}],
)
def test_a_token_request_without_proper_credentials_gets_400(anon_client, alice, body):
    response = anon_client.post("/api/auth/token/", body, format="json")
    assert response.status_code == 400


def test_a_refresh_token_gives_a_new_access_token(anon_client, alice):
    refresh = str(RefreshToken.for_user(alice))
    response = anon_client.post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")
    assert response.status_code == 200
    access = response.json()["access"]
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    assert anon_client.get("/api/me/").json()["username"] == "alice"


@pytest.mark.parametrize("refresh", ["garbage", "", None])
def test_a_bad_refresh_token_is_refused(anon_client, alice, refresh):
    response = anon_client.post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")
    assert response.status_code in (400, 401)


def test_an_access_token_is_not_a_refresh_token(anon_client, alice):
    access = str(AccessToken.for_user(alice))
    response = anon_client.post("/api/auth/token/refresh/", {"refresh": access}, format="json")
    assert response.status_code == 401


@pytest.mark.parametrize("method,url", PROTECTED)
def test_every_endpoint_needs_authentication(anon_client, method, url):
    response = getattr(anon_client, method)(url, format="json")
    assert response.status_code == 401
    assert response.has_header("WWW-Authenticate")


@pytest.mark.parametrize(
    "header",
    ["Bearer garbage", "Bearer ", "Bearer a.b.c", "Basic Zm9vOmJhcg==", "Bearer " + "x" * 5000],
)
def test_a_malformed_authorization_header_gets_401_never_500(anon_client, db, header):
    response = anon_client.get("/api/me/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401


def test_an_expired_access_token_is_refused(anon_client, alice):
    token = AccessToken.for_user(alice)
    token.set_exp(lifetime=-timedelta(seconds=1))
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert anon_client.get("/api/me/").status_code == 401


def test_the_token_of_a_deactivated_user_stops_working(anon_client, alice, token_for):
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    assert anon_client.get("/api/me/").status_code == 200
    alice.is_active = False
    alice.save()
    assert anon_client.get("/api/me/").status_code == 401


def test_the_token_of_a_deleted_user_stops_working(anon_client, alice, token_for):
    make_notification(alice)
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    alice.delete()
    assert anon_client.get("/api/notifications/").status_code == 401


def test_me_says_whether_the_user_may_send(client_for, alice, service_account, staff_user):
    assert client_for(alice).get("/api/me/").json()["can_send"] is False
    assert client_for(service_account).get("/api/me/").json() == {
        "id": service_account.pk,
        "username": "billing-service",
        "can_send": True,
        "external_id": None,
    }
    assert client_for(staff_user).get("/api/me/").json()["can_send"] is True


def test_a_signed_in_browser_session_also_works(client, alice):
    client.force_login(alice)
    assert client.get("/api/me/").json()["username"] == "alice"


def test_a_token_is_verified_once_and_then_remembered(anon_client, alice, monkeypatch):
    from rest_framework_simplejwt.backends import TokenBackend

    decoded = []
    real_decode = TokenBackend.decode
    monkeypatch.setattr(TokenBackend, "decode", lambda self, *a, **kw: decoded.append(1) or real_decode(self, *a, **kw))
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(alice)}")
    assert [anon_client.get("/api/me/").status_code for _ in range(3)] == [200, 200, 200]
    assert len(decoded) == 1


def test_a_remembered_token_is_refused_once_it_expires(anon_client, alice):
    token = AccessToken.for_user(alice)
    token.set_exp(lifetime=timedelta(seconds=2))  # exp is whole seconds: 1 to 2 s from now
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert anon_client.get("/api/me/").status_code == 200
    time.sleep(max(0.0, token["exp"] - time.time()) + 0.05)
    assert anon_client.get("/api/me/").status_code == 401


def test_a_remembered_token_with_another_signature_is_refused(anon_client, alice):
    token = str(AccessToken.for_user(alice))
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert anon_client.get("/api/me/").status_code == 200
    header, payload, signature = token.split(".")
    forged = ".".join([header, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert anon_client.get("/api/me/").status_code == 401


def test_a_token_checked_against_a_denylist_each_time_is_not_remembered(alice):
    from inbox.api.authentication import VerifiedTokens

    class DenylistedAccessToken(AccessToken):
        # What simplejwt's BlacklistMixin adds when its token_blacklist app is installed.
        def check_blacklist(self):
            pass

    tokens = VerifiedTokens()
    plain, checked = AccessToken.for_user(alice), DenylistedAccessToken.for_user(alice)
    tokens.add(b"plain", plain)
    tokens.add(b"checked", checked)
    assert tokens.get(b"plain") is plain
    assert tokens.get(b"checked") is None
