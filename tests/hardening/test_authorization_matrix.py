"""
Object-level authorization across every REST route and every WebSocket frame: whatever ids,
filters, query parameters or body fields user A sends, A never reads, marks, acks or deletes B's
notifications, and nothing A does reaches B's socket.

Each case runs while B has a socket open; afterwards B's rows are byte-for-byte what they were, no
answer to A carries B's data, and B's socket heard nothing. A twin test runs the write routes on
A's own notifications, so a route that simply does nothing cannot pass the matrix.
"""

from __future__ import annotations

import base64
from datetime import timedelta
from urllib.parse import urlencode

import orjson
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from rest_framework.test import APIClient

from inbox.models import Notification
from realtime import publisher

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "secret-of-bob"


@pytest.fixture
def world(make_user, token_for):
    alice, bob = make_user("alice-m"), make_user("bob-m")
    now = timezone.now()
    mk = Notification.objects.create
    b = {
        "unread": mk(recipient=bob, title=f"{SECRET} unread", category="billing"),
        "read": mk(recipient=bob, title=f"{SECRET} read", category="billing", read_at=now - timedelta(hours=1)),
        "pending": mk(recipient=bob, title=f"{SECRET} pending", category="security"),
        "delivered": mk(recipient=bob, title=f"{SECRET} delivered", delivered_at=now - timedelta(hours=2)),
    }
    a = {
        "unread": mk(recipient=alice, title="alice unread", category="billing"),
        "read": mk(recipient=alice, title="alice read", category="billing", read_at=now - timedelta(hours=1)),
    }
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
    return {"alice": alice, "bob": bob, "a": a, "b": b, "client": client, "token_a": token_for(alice), "token_b": token_for(bob)}


def snapshot(user) -> list[tuple]:
    return list(
        Notification.objects.filter(recipient=user)
        .order_by("id")
        .values_list("id", "recipient_id", "sender_id", "title", "category", "read_at", "delivered_at", "expires_at", "data")
    )


async def socket_for(token: str, query: str = "after=0") -> WebsocketCommunicator:
    from notifications_site.asgi import application

    ws = WebsocketCommunicator(application, f"/ws/notifications/?{query}", headers=[(b"origin", b"http://127.0.0.1")], subprotocols=["bearer", token])
    connected, _ = await ws.connect()
    assert connected
    return ws


async def frames_until_sync_done(ws) -> list[dict]:
    frames = []
    while True:
        frame = await ws.receive_json_from(3)
        frames.append(frame)
        if frame["type"] == "sync.done":
            return frames


async def frames_after(ws, frame: dict) -> list[dict]:
    """Send a frame, then a ping; everything answered before the pong."""
    await ws.send_json_to(frame)
    await ws.send_json_to({"type": "ping"})
    got = []
    while True:
        f = await ws.receive_json_from(3)
        if f["type"] == "pong":
            return got
        got.append(f)


def forged_cursor(position: int, reverse: bool = False) -> str:
    raw = urlencode({"p": str(position), **({"r": "1"} if reverse else {})})
    return base64.b64encode(raw.encode()).decode()


# --- The matrix -------------------------------------------------------------------------------
# Each REST case: (method, path template, body or None); {x} placeholders are B's ids, {B} B's user id.

REST_CASES = {
    "get B's notification": ("get", "/api/notifications/{unread}/", None),
    "get B's notification with ?user=B": ("get", "/api/notifications/{unread}/?user={B}&recipient={B}", None),
    "delete B's notification": ("delete", "/api/notifications/{unread}/", None),
    "delete B's read notification": ("delete", "/api/notifications/{read}/", None),
    "mark B's notification read": ("post", "/api/notifications/{unread}/read/", None),
    "mark B's notification read with a body naming A": ("post", "/api/notifications/{unread}/read/", {"recipient": "{A}", "user": "{A}"}),
    "mark B's notification unread": ("post", "/api/notifications/{read}/unread/", None),
    "put over B's notification": ("put", "/api/notifications/{unread}/", {"recipient": "{A}", "read_at": None, "title": "mine now"}),
    "patch B's notification": ("patch", "/api/notifications/{unread}/", {"recipient": "{A}", "read_at": "2000-01-01T00:00:00Z"}),
    "list with recipient and user filters": ("get", "/api/notifications/?recipient={B}&user={B}&recipient_id={B}&user_id={B}&owner={B}", None),
    "list with id filters": ("get", "/api/notifications/?id={unread}&ids={unread},{read}&pk={unread}&id__in={unread}", None),
    "list after 0 with the biggest page": ("get", "/api/notifications/?after=0&page_size=200", None),
    "list unread of B's category": ("get", "/api/notifications/?unread=true&category=billing", None),
    "list read only": ("get", "/api/notifications/?unread=false", None),
    "list with a forged cursor past B's ids": ("get", "/api/notifications/?cursor={cursor_hi}", None),
    "list with a forged reverse cursor": ("get", "/api/notifications/?cursor={cursor_lo}", None),
    "list after B's id": ("get", "/api/notifications/?after={unread}", None),
    "unread count of B": ("get", "/api/notifications/unread-count/?user={B}&recipient={B}", None),
    "read-all of B's category naming B": ("post", "/api/notifications/read-all/", {"category": "billing", "user": "{B}", "recipient": "{B}", "ids": ["{unread}", "{pending}"]}),
    "read-all with ?user=B": ("post", "/api/notifications/read-all/?user={B}", {}),
    "me as B": ("get", "/api/me/?user={B}&id={B}", None),
    "send to B without the permission": ("post", "/api/notifications/", {"recipient": "{B}", "title": "from A"}),
    "send as B without the permission": ("post", "/api/notifications/", {"recipient": "{A}", "sender": "{B}", "title": "forged"}),
}

WS_CASES = {
    "ack B's ids": {"type": "ack", "ids": ["{unread}", "{pending}", "{read}", "{delivered}"]},
    "read B's ids": {"type": "read", "ids": ["{unread}", "{pending}"]},
    "read A's and B's ids together": {"type": "read", "ids": ["{a_unread}", "{unread}", "{pending}"]},
    "read_all of B's category naming B": {"type": "read_all", "category": "billing", "user": "{B}", "recipient": "{B}"},
    "sync from 0": {"type": "sync", "after": 0},
    "sync from 0 naming B": {"type": "sync", "after": 0, "user": "{B}", "group": "inbox.user.{B}"},
}


def _fill(value, w):
    names = {**{k: n.pk for k, n in w["b"].items()}, "a_unread": w["a"]["unread"].pk, "A": w["alice"].pk, "B": w["bob"].pk}
    ids = sorted(n.pk for n in w["b"].values())
    names["cursor_hi"] = forged_cursor(ids[-1] + 1)
    names["cursor_lo"] = forged_cursor(0, reverse=True)
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in names:
            return names[value[1:-1]]
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, w) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, w) for k, v in value.items()}
    return value


@pytest.mark.parametrize("case", REST_CASES.values(), ids=REST_CASES.keys())
async def test_user_a_never_touches_b_through_any_rest_route(world, case):
    method, path, body = case
    before = await database_sync_to_async(snapshot)(world["bob"])
    b_socket = await socket_for(world["token_b"])
    await frames_until_sync_done(b_socket)

    client = world["client"]
    call = getattr(client, method)
    kwargs = {"format": "json"} if body is not None else {}
    args = (_fill(path, world),) + ((_fill(body, world),) if body is not None else ())
    response = await database_sync_to_async(call)(*args, **kwargs)

    assert response.status_code < 500, response.content
    assert SECRET.encode() not in response.content, f"B's data leaked: {response.content[:300]!r}"
    if response.status_code == 200 and method == "get" and "results" in response.json():
        assert {n["recipient"] for n in response.json()["results"]} <= {world["alice"].pk}
    if "unread-count" in path:
        assert response.json() == {"unread": 1}
    if "/api/me/" in path:
        assert response.json()["id"] == world["alice"].pk
    assert await database_sync_to_async(snapshot)(world["bob"]) == before, "B's notifications changed"
    await publisher.drain()
    assert await b_socket.receive_nothing(0.1), "something A did reached B's socket"
    assert not await database_sync_to_async(Notification.objects.filter(title__in=["from A", "forged", "mine now"]).exists)()
    await b_socket.disconnect()


@pytest.mark.parametrize("frame", WS_CASES.values(), ids=WS_CASES.keys())
@pytest.mark.parametrize("query", ["after=0", "after=0&user={B}&group=inbox.user.{B}&token={token_b}"])
async def test_user_a_never_touches_b_through_any_websocket_frame(world, frame, query):
    before = await database_sync_to_async(snapshot)(world["bob"])
    b_socket = await socket_for(world["token_b"])
    await frames_until_sync_done(b_socket)
    # A's socket, even with B's id, group and token in its URL (A's token is the subprotocol).
    a_socket = await socket_for(world["token_a"], query.format(B=world["bob"].pk, token_b=world["token_b"]))
    on_connect = await frames_until_sync_done(a_socket)
    answered = await frames_after(a_socket, _fill(frame, world))

    for f in on_connect + answered:
        assert SECRET not in orjson.dumps(f).decode(), f"B's data reached A: {f}"
        if f["type"] == "notification.created":
            assert f["notification"]["recipient"] == world["alice"].pk
    assert await database_sync_to_async(snapshot)(world["bob"]) == before, "B's notifications changed"
    await publisher.drain()
    assert await b_socket.receive_nothing(0.1), "something A did reached B's socket"
    await a_socket.disconnect()
    await b_socket.disconnect()


# --- The twin: the same routes do work on A's own notifications -------------------------------

OWN_EFFECTS = {
    "delete": (("delete", "/api/notifications/{id}/", None), lambda before, after: after is None),
    "read": (("post", "/api/notifications/{id}/read/", None), lambda before, after: after.read_at is not None),
    "read-all": (("post", "/api/notifications/read-all/", {"category": "billing"}), lambda before, after: after.read_at is not None),
    "ws read": ({"type": "read", "ids": ["{id}"]}, lambda before, after: after.read_at is not None),
    "ws ack": ({"type": "ack", "ids": ["{id}"]}, lambda before, after: after.delivered_at is not None),
    "ws read_all": ({"type": "read_all", "category": "billing"}, lambda before, after: after.read_at is not None),
}


@pytest.mark.parametrize("action,effect", OWN_EFFECTS.values(), ids=OWN_EFFECTS.keys())
async def test_the_same_routes_do_act_on_the_users_own_notifications(world, action, effect):
    own = world["a"]["unread"]
    if isinstance(action, tuple):
        method, path, body = action
        call = getattr(world["client"], method)
        args = (path.format(id=own.pk),) + ((body,) if body is not None else ())
        response = await database_sync_to_async(call)(*args, **({"format": "json"} if body is not None else {}))
        assert response.status_code in (200, 204), response.content
    else:
        ws = await socket_for(world["token_a"])
        await frames_until_sync_done(ws)
        frame = {k: ([own.pk] if v == ["{id}"] else v) for k, v in action.items()}
        await frames_after(ws, frame)
        await ws.disconnect()
    after = await database_sync_to_async(Notification.objects.filter(pk=own.pk).first)()
    assert effect(own, after)


# --- Mass assignment --------------------------------------------------------------------------


def test_a_send_cannot_set_sender_ids_timestamps_or_state_by_mass_assignment(make_user, token_for):
    sender, victim, other = make_user("ma-sender", can_send=True), make_user("ma-victim"), make_user("ma-other")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(sender)}")
    past = "2000-01-01T00:00:00Z"
    response = client.post(
        "/api/notifications/",
        {
            "recipient": victim.pk, "title": "hello", "id": 999_999, "pk": 999_999, "sender": other.username,
            "sender_id": other.pk, "recipient_id": other.pk, "created_at": past, "read_at": past, "delivered_at": past,
            "state": "read",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    n = Notification.objects.get(pk=response.json()["id"])
    assert n.pk != 999_999
    assert (n.recipient_id, n.sender_id) == (victim.pk, sender.pk)
    assert n.read_at is None and n.delivered_at is None and n.state == "pending"
    assert timezone.now() - n.created_at < timedelta(minutes=1)
    assert not Notification.objects.filter(recipient=other).exists()


@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_notification_has_no_update_route_for_recipient_or_sender(make_user, token_for, method):
    owner, thief = make_user("mu-owner"), make_user("mu-thief", can_send=True)
    n = Notification.objects.create(recipient=owner, title="mine")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(owner)}")
    response = getattr(client, method)(f"/api/notifications/{n.pk}/", {"recipient": thief.pk, "sender": thief.username, "title": "x"}, format="json")
    assert response.status_code == 405
    n.refresh_from_db()
    assert (n.recipient_id, n.sender_id, n.title) == (owner.pk, None, "mine")


def test_only_holders_of_the_send_permission_can_send(make_user, token_for):
    holder, plain, staff = make_user("p-holder", can_send=True), make_user("p-plain"), make_user("p-staff", is_staff=True)
    target = make_user("p-target")
    statuses = {}
    for name, user in [("holder", holder), ("plain", plain), ("staff without the permission", staff)]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        for body in ({"recipient": target.pk, "title": "t"}, {"recipients": [target.pk], "title": "t"}):
            statuses[(name, "recipients" in body)] = client.post("/api/notifications/", body, format="json").status_code
    assert statuses == {
        ("holder", False): 201, ("holder", True): 201,
        ("plain", False): 403, ("plain", True): 403,
        ("staff without the permission", False): 403, ("staff without the permission", True): 403,
    }
    assert Notification.objects.filter(recipient=target).count() == 2
