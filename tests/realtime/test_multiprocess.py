"""Two daphne processes share the channel layer through Redis: what one process writes reaches sockets held by the other."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import access_token_for

from .conftest import RestClient, open_client, recv_json

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def alice_and_bob(make_user):
    return make_user("alice"), make_user("bob")


async def test_two_daphne_processes_share_the_channel_layer(daphne_factory, redis_url, alice_and_bob, service_account):
    alice, bob = alice_and_bob
    a, b = await asyncio.gather(
        asyncio.to_thread(daphne_factory, redis_url=redis_url),
        asyncio.to_thread(daphne_factory, redis_url=redis_url),
    )
    assert a.port != b.port
    alice_on_a, _ = await open_client(a, access_token_for(alice))
    alice_on_b, _ = await open_client(b, access_token_for(alice), via="query")
    bob_on_b, _ = await open_client(b, access_token_for(bob))

    # A REST send through process A reaches the sockets held by B (and A).
    via_a = RestClient(a.port, access_token_for(service_account))
    status, body = await asyncio.to_thread(via_a.post, "/api/notifications/", {"recipient": "alice", "title": "Through A"})
    assert status == 201
    assert await recv_json(alice_on_b) == {"type": "notification.created", "notification": body, "unread": 1, "seq": body["id"]}
    assert await recv_json(alice_on_a) == {"type": "notification.created", "notification": body, "unread": 1, "seq": body["id"]}
    with pytest.raises(asyncio.TimeoutError):
        await recv_json(bob_on_b, timeout=0.3)

    # A bulk send through B reaches both users, on both processes.
    via_b = RestClient(b.port, access_token_for(service_account))
    status, bulk = await asyncio.to_thread(via_b.post, "/api/notifications/", {"recipients": ["alice", "bob"], "title": "Through B"})
    assert status == 201
    assert (await recv_json(alice_on_a))["notification"]["id"] == bulk["ids"][0]
    assert (await recv_json(alice_on_b))["notification"]["id"] == bulk["ids"][0]
    assert (await recv_json(bob_on_b))["notification"]["id"] == bulk["ids"][1]

    # A read on a socket of B is announced to the tab on A.
    await alice_on_b.send(json.dumps({"type": "read", "ids": [body["id"]]}))
    expected = {"type": "notification.read", "ids": [body["id"]], "read": True, "unread": 1}
    on_a = await recv_json(alice_on_a)
    assert on_a == {**expected, "seq": on_a["seq"]} and on_a["seq"] > body["id"]  # the read's step in alice's journal
    assert await recv_json(alice_on_b) == on_a

    via_a.close()
    via_b.close()
    for ws in (alice_on_a, alice_on_b, bob_on_b):
        await ws.close()


async def test_the_rest_api_on_uvicorn_reaches_the_sockets_held_by_daphne(daphne_factory, redis_url, alice_and_bob, service_account):
    # The deployment a proxy makes by routing /ws/ to daphne and the rest to uvicorn (README, Deployment).
    alice, bob = alice_and_bob
    sockets, api = await asyncio.gather(
        asyncio.to_thread(daphne_factory, redis_url=redis_url),
        asyncio.to_thread(daphne_factory, redis_url=redis_url, server="uvicorn"),
    )
    alice_ws, _ = await open_client(sockets, access_token_for(alice))
    client = RestClient(api.port, access_token_for(service_account))
    try:
        status, first = await asyncio.to_thread(client.post, "/api/notifications/", {"recipient": "alice", "title": "Via uvicorn"})
        assert status == 201
        assert await recv_json(alice_ws) == {"type": "notification.created", "notification": first, "unread": 1, "seq": first["id"]}
        status, bulk = await asyncio.to_thread(client.post, "/api/notifications/", {"recipients": ["bob", "alice"], "title": "Both"})
        assert status == 201
        assert (await recv_json(alice_ws))["notification"]["id"] == bulk["ids"][1]
        status, refused = await asyncio.to_thread(client.post, "/api/notifications/", {"recipient": "nobody", "title": "x"})
        assert status == 400 and "recipient" in refused
    finally:
        client.close()
        await alice_ws.close()
