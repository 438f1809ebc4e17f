"""
Who a token names, and when it stops naming them (issue 23, identity findings).

A token's ``user_id`` names a user only as an integer (or the decimal string simplejwt writes), never
as a float, a bool, a list or an object; anything else is a 401 on REST and a 4401 close on the
socket, never a 500 and never another user. A password change, a deactivation and a deletion revoke
every token issued before (the per-user token version, inbox.models.TokenVersion) and close every
open socket of the user on every server process (the CredentialsRevoked event, closed with 4401).
"""

from __future__ import annotations

import asyncio
import json

import jwt
import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tests.realtime.conftest import (  # noqa: F401 (fixtures)
    close_worker_thread_connections,
    connected,
    fresh_channel_layers,
    layer,
    socket_factory,
    ws,
)

PASSWORD = "pw-secret-123"
NOT_INTEGERS = ["abc", "2x", "", " 1", "1.0", [2], {"id": 2}, None]
ALMOST_ONE = [1.5, 1.0, True]


def signed(token_class=AccessToken, **claims) -> str:
    """A token signed with the server's key by hand (PyJWT), with these claims put over a real token's."""
    payload = dict(token_class().payload)
    payload.update(claims)
    return jwt.encode(payload, api_settings.SIGNING_KEY, algorithm=api_settings.ALGORITHM)


def client(token: str | None = None) -> APIClient:
    c = APIClient(raise_request_exception=False)  # a 500 comes back as a response
    if token:
        c.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return c


@pytest.fixture
def user_one(db):
    """The user whose primary key is 1: what int(1.5) and int(True) name."""
    return get_user_model().objects.create_user("one", password=PASSWORD, id=1)


def sign_in(username: str, password: str = PASSWORD) -> dict:
    response = client().post("/api/auth/token/", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def refresh(token: str):
    return client().post("/api/auth/token/refresh/", {"refresh": token}, format="json")


# --- REST: answers that were 500s ---------------------------------------------------------------


def test_a_refresh_token_of_a_deleted_user_is_a_401(alice):
    token = str(RefreshToken.for_user(alice))
    alice.delete()
    response = refresh(token)
    assert response.status_code == 401
    assert "access" not in response.json()


@pytest.mark.parametrize("user_id", NOT_INTEGERS, ids=repr)
def test_an_access_token_whose_user_id_is_not_an_integer_is_a_401(alice, user_id):
    response = client(signed(user_id=user_id)).get("/api/me/")
    assert response.status_code == 401
    assert response.has_header("WWW-Authenticate")


@pytest.mark.parametrize("user_id", NOT_INTEGERS, ids=repr)
def test_a_refresh_token_whose_user_id_is_not_an_integer_is_a_401(alice, user_id):
    response = refresh(signed(RefreshToken, user_id=user_id))
    assert response.status_code == 401
    assert "access" not in response.json()


@pytest.mark.parametrize("version", ["1", 1.0, True, [0], None], ids=repr)
def test_a_token_whose_version_is_not_an_integer_is_a_401(alice, version):
    assert client(signed(user_id=alice.pk, token_version=version)).get("/api/me/").status_code == 401
    assert refresh(signed(RefreshToken, user_id=alice.pk, token_version=version)).status_code == 401


# --- REST: identity confusions ------------------------------------------------------------------


@pytest.mark.parametrize("user_id", ALMOST_ONE, ids=repr)
def test_an_access_token_whose_user_id_is_a_float_or_a_bool_is_a_401_not_user_1(user_one, user_id):
    response = client(signed(user_id=user_id)).get("/api/me/")
    assert response.status_code == 401
    assert refresh(signed(RefreshToken, user_id=user_id)).status_code == 401


@pytest.mark.parametrize("user_id", [1, "1"], ids=repr)
def test_the_user_id_as_an_integer_or_as_simplejwts_decimal_string_names_the_user(user_one, user_id):
    response = client(signed(user_id=user_id)).get("/api/me/")
    assert response.status_code == 200
    assert response.json()["id"] == 1
    assert refresh(signed(RefreshToken, user_id=user_id)).status_code == 200


def test_a_password_change_revokes_the_access_and_the_refresh_token(alice):
    tokens = sign_in("alice")
    assert client(tokens["access"]).get("/api/me/").status_code == 200
    alice.set_password("a-new-secret-456")
    alice.save()
    assert client(tokens["access"]).get("/api/me/").status_code == 401
    assert refresh(tokens["refresh"]).status_code == 401
    # Signing in with the new password gives tokens that work, and refresh.
    fresh = sign_in("alice", "a-new-secret-456")
    assert client(fresh["access"]).get("/api/me/").json()["username"] == "alice"
    assert client(refresh(fresh["refresh"]).json()["access"]).get("/api/me/").status_code == 200


def test_a_password_set_by_hand_revokes_too(alice):
    from django.contrib.auth.hashers import make_password

    tokens = sign_in("alice")
    alice.password = make_password("set-by-hand-789")  # not through set_password()
    alice.save()
    assert client(tokens["access"]).get("/api/me/").status_code == 401
    assert refresh(tokens["refresh"]).status_code == 401


def test_a_deactivated_users_tokens_stay_revoked_after_reactivation(alice):
    tokens = sign_in("alice")
    alice.is_active = False
    alice.save()
    assert client(tokens["access"]).get("/api/me/").status_code == 401
    alice.is_active = True
    alice.save()
    assert client(tokens["access"]).get("/api/me/").status_code == 401
    assert refresh(tokens["refresh"]).status_code == 401
    assert client(sign_in("alice")["access"]).get("/api/me/").status_code == 200


def test_a_password_hash_upgraded_at_sign_in_revokes_nothing(alice, settings):
    tokens = sign_in("alice")  # alice's hash is MD5 (the test settings)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.ScryptPasswordHasher", *settings.PASSWORD_HASHERS]
    sign_in("alice")  # Django re-hashes the same password with scrypt: not a password change
    alice.refresh_from_db()
    assert alice.password.startswith("scrypt$")
    assert client(tokens["access"]).get("/api/me/").status_code == 200
    assert refresh(tokens["refresh"]).status_code == 200


def test_saving_a_user_without_touching_credentials_revokes_nothing(alice):
    tokens = sign_in("alice")
    alice.first_name = "Alice"
    alice.save()
    alice.save(update_fields=["last_login"])
    assert client(tokens["access"]).get("/api/me/").status_code == 200
    assert refresh(tokens["refresh"]).status_code == 200


def test_revoking_on_demand_signs_the_user_out_everywhere(alice):
    from inbox import services

    tokens = sign_in("alice")
    assert services.credentials_revoke(user_id=alice.pk) == 1
    assert client(tokens["access"]).get("/api/me/").status_code == 401
    assert refresh(tokens["refresh"]).status_code == 401
    assert client(sign_in("alice")["access"]).get("/api/me/").status_code == 200


def test_a_token_issued_after_a_revocation_elsewhere_works_here_at_once(alice):
    from inbox.models import TokenVersion

    old = sign_in("alice")
    assert client(old["access"]).get("/api/me/").status_code == 200  # this process remembers version 0
    TokenVersion.objects.create(user=alice, version=1)  # another process revoked: no signal here
    new = sign_in("alice")
    assert client(new["access"]).get("/api/me/").status_code == 200  # newer than remembered: asked again
    assert client(old["access"]).get("/api/me/").status_code == 401  # and the old one is refused now


# --- The socket ---------------------------------------------------------------------------------


async def _sign_in(username: str, password: str = PASSWORD) -> dict:
    return await database_sync_to_async(sign_in)(username, password)


@database_sync_to_async
def _save(user, **changes):
    for field, value in changes.items():
        if field == "password":
            user.set_password(value)
        else:
            setattr(user, field, value)
    user.save()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("user_id", ALMOST_ONE, ids=repr)
async def test_a_socket_whose_user_id_is_a_float_or_a_bool_is_closed_with_4401_not_user_1(ws, user_id):
    await database_sync_to_async(get_user_model().objects.create_user)("one", password=PASSWORD, id=1)
    for via in ("query", "subprotocol"):
        sock = await ws(token=signed(user_id=user_id), via=via)
        assert sock.connected
        assert await sock.close_code() == 4401, via


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("user_id", NOT_INTEGERS, ids=repr)
async def test_a_socket_whose_user_id_is_not_an_integer_is_closed_with_4401(ws, alice, user_id):
    sock = await ws(token=signed(user_id=user_id), via="subprotocol")
    assert await sock.close_code() == 4401


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", [{"is_active": False}, {"password": "a-new-secret-456"}], ids=["deactivated", "password_changed"])
async def test_an_open_socket_is_closed_with_4401_when_its_user_is_deactivated_or_changes_password(connected, alice, bob, change):
    tokens = await _sign_in("alice")
    sock = await connected(alice, token=tokens["access"])
    bystander = await connected(bob)
    await _save(alice, **change)
    frame = await sock.frame()
    assert frame == {"type": "error", "code": "credentials_revoked", "detail": frame["detail"]}
    assert await sock.close_code() == 4401
    assert await bystander.silent()


@pytest.mark.django_db(transaction=True)
async def test_an_open_socket_is_closed_with_4401_when_its_user_is_deleted(connected, alice):
    sock = await connected(alice)
    await database_sync_to_async(alice.delete)()
    assert (await sock.frame())["code"] == "credentials_revoked"
    assert await sock.close_code() == 4401


@pytest.mark.django_db(transaction=True)
async def test_a_socket_of_a_user_deactivated_elsewhere_moments_ago_is_closed_with_4401(connected, ws, alice):
    first = await connected(alice)  # this process remembers alice as active (inbox/directory.py)
    await first.disconnect()
    # Another process deactivates her: no signal reaches this one, whose directory still says active.
    await database_sync_to_async(get_user_model().objects.filter(pk=alice.pk).update)(is_active=False)
    sock = await ws(alice)
    assert sock.connected  # accepted, then closed before anything is sent
    assert await sock.close_code() == 4401


@pytest.mark.django_db(transaction=True)
async def test_a_socket_with_a_token_from_before_a_password_change_is_closed_with_4401(ws, alice):
    tokens = await _sign_in("alice")
    await _save(alice, password="a-new-secret-456")
    sock = await ws(token=tokens["access"])
    assert await sock.close_code() == 4401
    fresh = await _sign_in("alice", "a-new-secret-456")
    sock = await ws(token=fresh["access"])
    _, done = await sock.until_sync_done()
    assert done["type"] == "sync.done"


# --- Every server process: real daphne processes, real Redis ----------------------------------


async def _closed(ws, timeout: float = 5.0) -> tuple[list[dict], int | None]:
    """Frames until the server closes the socket, and the close code."""
    from websockets.exceptions import ConnectionClosed

    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    except ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None


@pytest.mark.e2e
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_a_deactivated_users_live_sockets_close_with_4401_on_every_daphne_process(daphne_factory, redis_url, settings, alice, bob):
    from tests.realtime.conftest import open_client

    a, b = await asyncio.gather(
        asyncio.to_thread(daphne_factory, redis_url=redis_url),
        asyncio.to_thread(daphne_factory, redis_url=redis_url),
    )
    tokens = await _sign_in("alice")
    alice_on_a, _ = await open_client(a, tokens["access"])
    alice_on_b, _ = await open_client(b, tokens["access"], via="query")
    bob_on_b, _ = await open_client(b, str(AccessToken.for_user(bob)))

    # This process (an operator's shell, the admin on a third server) shares the servers' Redis.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.layers.BatchingRedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}}
    channel_layers.backends.clear()
    await _save(alice, is_active=False)

    for sock in (alice_on_a, alice_on_b):
        frames, code = await _closed(sock)
        assert [f["code"] for f in frames] == ["credentials_revoked"]
        assert code == 4401
    # Within the directory's 5 s on the server that knew her, a new socket is still refused.
    frames, code = await _connect_and_wait_for_close(a, tokens["access"])
    assert (frames, code) == ([], 4401)
    # Bob's socket on the same process is untouched.
    await bob_on_b.send(json.dumps({"type": "ping"}))
    assert json.loads(await asyncio.wait_for(bob_on_b.recv(), 5)) == {"type": "pong"}
    await bob_on_b.close()


async def _connect_and_wait_for_close(server, token: str) -> tuple[list[dict], int | None]:
    from websockets.asyncio.client import connect

    sock = await connect(server.ws_url, origin=f"http://127.0.0.1:{server.port}", subprotocols=["bearer", token], compression=None)
    return await _closed(sock)
