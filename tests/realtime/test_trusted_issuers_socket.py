"""
Tokens the product signs, on the WebSocket: a good one opens the socket of the recipient its ``sub``
names, who then receives what is sent to that external id; a bad one is closed with 4401 and
creates no one; a trusted token is never accepted once expired, and the socket closes at its exp.
Inbox's own tokens with malformed claims close with 4401 too, never a crash of the handshake.
"""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from inbox import services
from inbox.models import ExternalRecipient
from realtime.publisher import group_for_user
from tests.conftest import access_token_for
from tests.inbox.api.test_malformed_claims import MALFORMED, signed
from tests.inbox.api.test_trusted_issuers import (
    AUD_ISS,
    ES_ISS,
    HS_ISS,
    JWKS_ISS,
    OMIT,
    RS_ISS,
    SECRET,
    Keys,
    claims,
    issuers_config,
    sign,
)

from .conftest import RestClient, group_members, open_client, recv_json

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def trusted(settings, keys, tmp_path):
    settings.INBOX = {**getattr(settings, "INBOX", {}), "TRUSTED_ISSUERS": issuers_config(keys, tmp_path / "jwks.json")}
    return keys


@database_sync_to_async
def recipient_of(external_id: str):
    row = ExternalRecipient.objects.select_related("user").filter(external_id=external_id).first()
    return row.user if row else None


@database_sync_to_async
def external_recipients() -> int:
    return ExternalRecipient.objects.count()


@pytest.mark.parametrize("iss", [HS_ISS, RS_ISS, ES_ISS, JWKS_ISS], ids=["HS256", "RS256", "ES256", "jwks_file"])
async def test_a_product_signed_token_opens_the_socket_that_receives_what_is_sent_to_its_external_id(
    ws, trusted, send, iss
):
    sock = await ws(token=sign(claims(iss, sub="order-customer-7", email="c7@example.com"), trusted), via="subprotocol")
    assert sock.connected and sock.subprotocol == "bearer"
    _, done = await sock.until_sync_done()
    assert done["unread"] == 0

    user = await recipient_of("order-customer-7")
    recipient = await database_sync_to_async(services.recipient_ensure)(external_id="order-customer-7")
    assert recipient.pk == user.pk and recipient.email == "c7@example.com"
    await send(recipient, title="Your order shipped")
    frame = await sock.frame()
    assert frame["type"] == "notification.created"
    assert frame["notification"]["title"] == "Your order shipped"
    assert frame["notification"]["recipient"] == user.pk


async def test_a_token_in_the_query_string_works_too(ws, trusted):
    sock = await ws(token=sign(claims(sub="q-1")), via="query")
    assert sock.connected
    _, done = await sock.until_sync_done()
    assert done["type"] == "sync.done"


BAD = {
    "untrusted issuer": lambda k: sign(claims("https://evil.example")),
    "wrong signature": lambda k: sign(claims(RS_ISS), key=k.rsa_other, alg="RS256"),
    "alg none": lambda k: jwt.encode(claims(HS_ISS), None, algorithm="none"),
    "expired": lambda k: sign(claims(lifetime=-1)),
    "missing exp": lambda k: sign(claims(exp=OMIT)),
    "sub a number": lambda k: sign(claims(sub=7)),
    "sub missing": lambda k: sign(claims(sub=OMIT)),
    "sub too long": lambda k: sign(claims(sub="s" * 256)),
    "wrong audience": lambda k: sign(claims(AUD_ISS, aud="billing")),
    "aud when none is configured": lambda k: sign(claims(HS_ISS, aud="inbox")),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_a_bad_product_token_is_closed_with_4401_and_creates_no_recipient(ws, trusted, case):
    for via in ("subprotocol", "query"):
        sock = await ws(token=BAD[case](trusted), via=via)
        assert sock.connected, via  # accepted, then closed: the code reaches the client
        assert await sock.close_code() == 4401, (case, via)
    assert await external_recipients() == 0


async def test_a_product_token_is_closed_with_4401_when_it_expires(ws, trusted, send):
    token = sign(claims(sub="short", lifetime=2))
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    sock = await ws(token=token)
    await sock.until_sync_done()
    recipient = await database_sync_to_async(services.recipient_ensure)(external_id="short")
    await send(recipient, title="while valid")
    assert (await sock.frame())["notification"]["title"] == "while valid"
    assert await sock.close_code(timeout=4) == 4401
    assert time.time() >= exp - 0.05
    await sock.disconnect()  # the client goes; its membership with it
    # Remembered by this process as verified, and still refused now that it has expired.
    again = await ws(token=token)
    assert again.connected
    assert await again.close_code() == 4401
    assert await group_members(group_for_user(recipient.pk)) == []


async def test_a_revoked_recipient_is_closed_with_4401_on_its_next_connect(ws, trusted):
    token = sign(claims(sub="revoked"))
    first = await ws(token=token)
    await first.until_sync_done()
    user = await recipient_of("revoked")
    await database_sync_to_async(services.credentials_revoke)(user_id=user.pk)
    # The open socket is told, then closed, by the revocation.
    assert (await first.frame())["code"] == "credentials_revoked"
    assert await first.close_code() == 4401
    again = await ws(token=token)
    assert await again.close_code() == 4401


@pytest.mark.parametrize(
    "case", ["user_id the issue's ext-42", "user_id a list", "token_version a string", "exp past year 9999", "exp a huge integer", "iss untrusted", "iss a number"]
)
async def test_an_inbox_token_with_a_malformed_claim_is_closed_with_4401(socket_factory, alice, case):
    payload = {**AccessToken.for_user(alice).payload, **MALFORMED[case]}
    sock = await socket_factory(token=signed(payload))
    assert sock.connected
    assert await asyncio.wait_for(sock.close_code(), 5) == 4401
    assert await group_members(group_for_user(alice.pk)) == []


@pytest.mark.e2e
async def test_through_daphne_a_product_signed_token_gets_on_rest_and_the_socket_what_is_sent_to_it(
    daphne_factory, redis_url, service_account
):
    issuer = {"iss": HS_ISS, "alg": "HS256", "secret": SECRET}
    server = await asyncio.to_thread(daphne_factory, redis_url=redis_url, env={"INBOX_TRUSTED_ISSUERS": json.dumps([issuer])})
    token = sign(claims(HS_ISS, sub="crm-0042", name="Grace"))

    product_page = RestClient(server.port, token)
    status, me = await asyncio.to_thread(product_page.request, "GET", "/api/me/")
    assert status == 200
    ws, done = await open_client(server, token)
    assert done["unread"] == 0

    sender = RestClient(server.port, access_token_for(service_account))
    status, body = await asyncio.to_thread(sender.post, "/api/notifications/", {"recipient": me["id"], "title": "Invoice ready"})
    assert status == 201
    frame = await recv_json(ws)
    assert frame["type"] == "notification.created" and frame["notification"]["title"] == "Invoice ready"
    status, listed = await asyncio.to_thread(product_page.request, "GET", "/api/notifications/")
    assert status == 200 and [n["title"] for n in listed["results"]] == ["Invoice ready"]

    status, refused = await asyncio.to_thread(RestClient(server.port, sign(claims(HS_ISS, lifetime=-1))).request, "GET", "/api/me/")
    assert status == 401 and "expired" in refused["detail"]
    await ws.close()
    product_page.close()
    sender.close()
