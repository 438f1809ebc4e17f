"""
A Hypothesis state machine drives one user's inbox through sends (to them and to someone else),
reads and unreads over REST and the socket, read-all, deletes, acks, disconnects, reconnects with
catch-up and sync frames, and checks after every step:

- the unread count (REST, and the last count the socket carried) equals the rows in the database;
- the client's view (id -> read, built only from frames, catch-up and the REST refresh a reconnecting
  client does for what it already holds) equals the database;
- no notification arrives twice, none of someone else's arrives at all.

It runs the real consumer (notifications_site.asgi) through WebsocketCommunicator with the in-memory
layer, on its own event loop, so each step is fast; the database is the real test database.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test
from rest_framework.test import APIClient

from inbox import services
from inbox.models import Notification
from realtime import publisher

pytestmark = pytest.mark.django_db(transaction=True)

CATEGORIES = ["billing", "security"]
TIMEOUT = 3


class InboxMachine(RuleBasedStateMachine):
    user = other = sender = None  # set by the test
    token = ""
    totals = {"steps": 0, "frames": 0, "sends": 0, "reconnects": 0, "duplicates": 0, "foreign": 0, "checks": 0}

    def __init__(self):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        channel_layers.backends.clear()
        publisher.unbind_loop()
        Notification.objects.filter(recipient__in=[self.user, self.other]).delete()
        self.ws: WebsocketCommunicator | None = None
        self.view: dict[int, bool] = {}  # id -> read, as the client knows it
        self.ever_received: set[int] = set()
        self.last_id = 0
        self.unread_seen: int | None = None
        self.rest = APIClient()
        self.rest.credentials(HTTP_AUTHORIZATION=f"Bearer {self.token}")

    # --- plumbing ---------------------------------------------------------------------------------

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def teardown(self):
        if self.ws is not None:
            self.run(self.ws.disconnect())
        publisher.unbind_loop()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def apply(self, frame: dict) -> None:
        InboxMachine.totals["frames"] += 1
        kind = frame["type"]
        InboxMachine.totals[kind] = InboxMachine.totals.get(kind, 0) + 1
        if kind == "notification.created":
            n = frame["notification"]
            if n["recipient"] != self.user.pk:
                InboxMachine.totals["foreign"] += 1
                raise AssertionError(f"someone else's notification arrived: {n}")
            if n["id"] in self.ever_received:
                InboxMachine.totals["duplicates"] += 1
                raise AssertionError(f"notification {n['id']} arrived twice")
            self.ever_received.add(n["id"])
            self.view[n["id"]] = n["read_at"] is not None
            self.last_id = max(self.last_id, n["id"])
            self.unread_seen = frame["unread"]
        elif kind == "notification.read":
            for nid in frame["ids"]:
                if nid in self.view:
                    self.view[nid] = frame["read"]
            self.unread_seen = frame["unread"]
        elif kind == "notification.deleted":
            for nid in frame["ids"]:
                self.view.pop(nid, None)
            self.unread_seen = frame["unread"]
        elif kind == "sync.done":
            self.last_id = max(self.last_id, frame["last_id"])
            self.unread_seen = frame["unread"]
        elif kind == "error":
            raise AssertionError(f"the server refused a well-formed frame: {frame}")

    async def frames_until(self, kind: str) -> None:
        while True:
            frame = await self.ws.receive_json_from(TIMEOUT)
            if frame["type"] == kind:
                if kind == "sync.done":
                    self.apply(frame)
                return
            self.apply(frame)

    async def barrier(self) -> None:
        """
        Everything so far has reached the socket: a ping round trip (the consumer has handled every
        frame sent before, and scheduled their events), drain the fan-out, a second round trip.
        """
        for _ in range(2):
            await self.ws.send_json_to({"type": "ping"})
            await self.frames_until("pong")
            await publisher.drain()
            await asyncio.sleep(0)
        await self.ws.send_json_to({"type": "ping"})
        await self.frames_until("pong")

    def db_rows(self) -> dict[int, bool]:
        return {nid: read_at is not None for nid, read_at in Notification.objects.filter(recipient=self.user).values_list("id", "read_at")}

    def db_unread(self) -> int:
        return Notification.objects.filter(recipient=self.user, read_at__isnull=True).count()

    def rest_call(self, method: str, path: str, body=None):
        call = getattr(self.rest, method)
        return self.run(database_sync_to_async(lambda: call(path, body, format="json") if body is not None else call(path))())

    def connect(self) -> None:
        from notifications_site.asgi import application

        async def go():
            self.ws = WebsocketCommunicator(
                application, f"/ws/notifications/?after={self.last_id}", headers=[(b"origin", b"http://127.0.0.1")],
                subprotocols=["bearer", self.token],
            )
            connected, _ = await self.ws.connect(TIMEOUT)
            assert connected
            await self.frames_until("sync.done")

        self.run(go())
        # What catch-up cannot tell (older ones read or deleted meanwhile): refresh them over REST,
        # as the browser client does after a reconnect.
        for nid in list(self.view):
            response = self.rest_call("get", f"/api/notifications/{nid}/")
            if response.status_code == 404:
                del self.view[nid]
            else:
                self.view[nid] = response.json()["read_at"] is not None

    def has_own(self) -> bool:
        return Notification.objects.filter(recipient=self.user).exists()

    def ids(self, data, *, read: bool | None = None) -> list[int]:
        """Some of the user's ids (the read or unread ones when asked), sometimes with someone else's."""
        rows = self.db_rows()
        own = sorted(i for i, r in rows.items() if read is None or r == read) or sorted(rows)
        picked = data.draw(st.lists(st.sampled_from(own), min_size=1, max_size=3, unique=True)) if own else []
        foreign = list(Notification.objects.filter(recipient=self.other).values_list("id", flat=True))
        if foreign and data.draw(st.booleans()):
            picked.append(data.draw(st.sampled_from(foreign)))
        return picked or [1]

    # --- rules ------------------------------------------------------------------------------------

    @initialize(connected=st.booleans())
    def start(self, connected):
        if connected:
            self.connect()

    @rule(count=st.integers(1, 3), category=st.sampled_from(CATEGORIES), bulk=st.booleans())
    def send(self, count, category, bulk):
        async def go():
            for i in range(count):
                recipients = [self.user, self.other] if bulk else [self.user]
                await database_sync_to_async(services.notification_create)(
                    sender=self.sender, recipients=recipients, title=f"n{i}", category=category
                )

        self.run(go())
        InboxMachine.totals["sends"] += count

    @rule(category=st.sampled_from(CATEGORIES))
    def send_to_someone_else(self, category):
        self.run(database_sync_to_async(services.notification_create)(sender=self.sender, recipients=[self.other], title="not yours", category=category))

    @precondition(lambda self: self.has_own())
    @rule(data=st.data(), over_socket=st.booleans())
    def mark_read(self, data, over_socket):
        ids = self.ids(data, read=False)
        if over_socket and self.ws is not None:
            self.run(self.ws.send_json_to({"type": "read", "ids": ids}))
            self.run(self.barrier())
        else:
            for nid in ids:
                assert self.rest_call("post", f"/api/notifications/{nid}/read/").status_code in (200, 404)
        rows = self.db_rows()
        assert all(rows[i] for i in ids if i in rows), "a notification it was asked to read is still unread"

    @precondition(lambda self: self.has_own())
    @rule(data=st.data())
    def mark_unread(self, data):
        for nid in self.ids(data, read=True):
            assert self.rest_call("post", f"/api/notifications/{nid}/unread/").status_code in (200, 404)

    @rule(category=st.sampled_from([None, *CATEGORIES]), over_socket=st.booleans())
    def read_all(self, category, over_socket):
        if over_socket and self.ws is not None:
            self.run(self.ws.send_json_to({"type": "read_all", **({"category": category} if category else {})}))
            self.run(self.barrier())  # the consumer has done it before the invariants read the database
        else:
            response = self.rest_call("post", "/api/notifications/read-all/", {"category": category} if category else {})
            assert response.status_code == 200 and response.json()["unread"] == self.db_unread()

    @precondition(lambda self: self.has_own())
    @rule(data=st.data())
    def delete(self, data):
        for nid in self.ids(data):
            assert self.rest_call("delete", f"/api/notifications/{nid}/").status_code in (204, 404)

    @precondition(lambda self: self.ws is not None and self.has_own())
    @rule(data=st.data())
    def delete_while_connected(self, data):
        self.delete(data)

    @precondition(lambda self: self.ws is not None and self.has_own())
    @rule(data=st.data())
    def mark_unread_while_connected(self, data):
        self.mark_unread(data)

    @precondition(lambda self: self.ws is not None)
    @rule(data=st.data())
    def ack(self, data):
        ids = self.ids(data)
        foreign_before = dict(Notification.objects.filter(recipient=self.other).values_list("id", "delivered_at"))
        self.run(self.ws.send_json_to({"type": "ack", "ids": ids}))
        self.run(self.barrier())
        own = set(self.db_rows())
        acked = Notification.objects.filter(pk__in=[i for i in ids if i in own])
        assert all(n.delivered_at is not None for n in acked)
        assert dict(Notification.objects.filter(recipient=self.other).values_list("id", "delivered_at")) == foreign_before

    @precondition(lambda self: self.ws is not None)
    @rule()
    def disconnect(self):
        self.run(self.ws.disconnect())
        self.ws = None

    @precondition(lambda self: self.ws is None)
    @rule()
    def reconnect(self):
        InboxMachine.totals["reconnects"] += 1
        self.connect()

    @precondition(lambda self: self.ws is not None)
    @rule()
    def sync_frame(self):
        async def go():
            await self.ws.send_json_to({"type": "sync", "after": self.last_id})
            await self.frames_until("sync.done")

        self.run(go())

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def unread_count_and_view_match_the_database(self):
        InboxMachine.totals["steps"] += 1
        response = self.rest_call("get", "/api/notifications/unread-count/")
        assert response.status_code == 200, response.content
        rest = response.json()["unread"]
        assert rest == self.db_unread(), (rest, self.db_unread())
        if self.ws is not None:
            self.run(self.barrier())
            assert self.view == self.db_rows(), f"client view {self.view} != database {self.db_rows()}"
            assert self.unread_seen == self.db_unread(), (self.unread_seen, self.db_unread())
            InboxMachine.totals["checks"] += 1


def test_the_inbox_state_machine_keeps_client_server_and_counts_in_step(make_user, token_for, figures, request):
    # The barrier pings three times per step: lift the frame rate limit (it has its own tests).
    django_settings = request.getfixturevalue("settings")
    django_settings.REALTIME = {**django_settings.REALTIME, "FRAME_RATE": 1e6, "FRAME_BURST": 10**6}
    InboxMachine.user = make_user("sm-user")
    InboxMachine.other = make_user("sm-other")
    InboxMachine.sender = make_user("sm-sender", can_send=True)
    InboxMachine.token = token_for(InboxMachine.user)
    InboxMachine.totals = dict.fromkeys(InboxMachine.totals, 0)
    run_state_machine_as_test(
        InboxMachine,
        settings=settings(
            max_examples=int(os.environ.get("STATE_MACHINE_EXAMPLES", "50")),
            stateful_step_count=30, deadline=None, database=None,
            # No shrinking unless asked (STATE_MACHINE_SHRINK=1): a failure is reported in seconds.
            phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if os.environ.get("STATE_MACHINE_SHRINK") else []),
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    figures.update(**InboxMachine.totals)
    assert InboxMachine.totals["checks"] > 0 and InboxMachine.totals["reconnects"] > 0
    assert InboxMachine.totals.get("notification.created", 0) > 0 and InboxMachine.totals.get("notification.read", 0) > 0
