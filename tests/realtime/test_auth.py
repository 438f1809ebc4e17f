"""Who may open /ws/notifications/: a valid access token of an active user, from an allowed Origin."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from realtime.publisher import group_for_user

from .conftest import group_members

pytestmark = pytest.mark.django_db(transaction=True)

BAD_TOKEN_CASES = ["missing", "malformed", "wrong_signature", "expired", "refresh_token", "inactive_user", "deleted_user"]


@pytest.fixture(params=BAD_TOKEN_CASES)
def bad_token(request, make_user):
    """(case, token or None, the id of the user the token names)."""
    case = request.param
    user = make_user(f"victim-{case}", is_active=case != "inactive_user")
    token = AccessToken.for_user(user)
    if case == "missing":
        raw = None
    elif case == "malformed":
        raw = "not.a.jwt"
    elif case == "wrong_signature":
        raw = jwt.encode(dict(token.payload), "not-the-server-key-but-long-enough-for-hs256", algorithm="HS256")
    elif case == "expired":
        token.set_exp(from_time=timezone.now() - timedelta(hours=1), lifetime=timedelta(minutes=5))
        raw = str(token)
    elif case == "refresh_token":
        raw = str(RefreshToken.for_user(user))
    elif case == "deleted_user":
        raw = str(token)
        user.delete()
    else:
        raw = str(token)
    return case, raw, token["user_id"]


async def test_a_valid_token_in_the_query_string_is_accepted(ws, alice):
    sock = await ws(alice)
    assert sock.connected
    assert sock.subprotocol is None
    _, done = await sock.until_sync_done()
    assert done == {"type": "sync.done", "last_id": 0, "unread": 0, "more": False, "seq": 0}
    assert await group_members(group_for_user(alice.pk)) != []


async def test_a_valid_token_as_subprotocol_is_accepted_and_bearer_is_echoed(ws, alice):
    sock = await ws(alice, via="subprotocol")
    assert sock.connected
    assert sock.subprotocol == "bearer"
    _, done = await sock.until_sync_done()
    assert done["type"] == "sync.done"


async def test_a_bad_token_is_closed_with_4401_and_never_joins_a_group(ws, bad_token):
    case, raw, user_id = bad_token
    for via in ("query", "subprotocol"):
        if case == "missing" and via == "subprotocol":
            sock = await ws(subprotocols=["bearer"])
        else:
            sock = await ws(token=raw, via=via)
        # Accepted first, then closed: a close before accept would lose the code in an HTTP 403.
        assert sock.connected, via
        assert await sock.close_code() == 4401, via
        assert await group_members(group_for_user(user_id)) == [], via


async def test_a_foreign_origin_is_refused(ws, alice):
    sock = await ws(alice, origin=b"https://evil.example")
    assert not sock.connected


async def test_the_group_comes_from_the_token_and_not_from_the_url(connected, send, alice, bob):
    sock = await connected(alice, query=f"user={bob.pk}&group={group_for_user(bob.pk)}")
    await send(bob, title="for bob")
    assert await sock.silent()
    await send(alice, title="for alice")
    frame = await sock.frame()
    assert frame["notification"]["title"] == "for alice"
    assert frame["notification"]["recipient"] == alice.pk


async def test_a_socket_is_closed_with_4401_when_its_token_expires_and_gets_nothing_after(connected, send, alice):
    token = AccessToken.for_user(alice)
    token.set_exp(lifetime=timedelta(seconds=2))
    sock = await connected(alice, token=str(token))
    await send(alice, title="while valid")
    assert (await sock.frame())["notification"]["title"] == "while valid"
    assert await sock.close_code(timeout=4) == 4401
    await send(alice, title="after expiry")
    assert await sock.silent()


async def test_a_frame_sent_on_an_expired_token_is_refused_with_4401(ws, alice):
    token = AccessToken.for_user(alice)
    # exp is whole seconds: 1 to 2 s from now (with 1 s it could expire during the connect itself).
    token.set_exp(lifetime=timedelta(seconds=2))
    sock = await ws(token=str(token))
    await sock.until_sync_done()
    # The expiry timer and the frame race; either way the socket ends with 4401 and never a pong.
    await asyncio.sleep(max(0.0, token["exp"] - timezone.now().timestamp()) + 0.05)
    await sock.send_json_to({"type": "ping"})
    assert await sock.close_code() == 4401
    assert await sock.silent()


async def test_a_bad_after_parameter_gets_an_error_frame_and_4400(ws, alice):
    sock = await ws(alice, after="abc")
    assert sock.connected
    frame = await sock.frame()
    assert frame["type"] == "error" and frame["code"] == "invalid_after"
    assert await sock.close_code() == 4400
    assert await group_members(group_for_user(alice.pk)) == []


async def test_an_oversized_token_is_refused_with_4401(ws, alice):
    sock = await ws(token="a" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 64))
    assert sock.connected
    assert await sock.close_code() == 4401
