"""
A Hypothesis state machine drives one user's inbox through sends (to them and to someone else),
reads and unreads over REST and the socket, read-all, deletes (the user's and an operator's), an
operator's edits, sends with a key (new, then updated in place) and their retraction, acks, disconnects, reconnects with catch-up (``after``) or by the change journal
(``since``), and a second client that goes away and resumes ``since`` its journal step, and checks
after every step:

- the unread count (REST, and the last count the socket carried) equals the rows in the database;
- the client's view (id -> read, built only from frames, catch-up and the REST refresh a reconnecting
  client does for what it already holds) equals the database;
- no notification arrives twice, none of someone else's arrives at all;
- a resume by journal step replays each change once, in step order, and the away client's old list
  with the replay applied equals the database, every field of every row but the receipts
  (``delivered_at`` and the state it makes: an ack is not a step of the journal).

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

from django.db import transaction

from inbox import services
from inbox.models import Notification
from inbox.payloads import notification_payload
from inbox.store import journal
from realtime import publisher

pytestmark = pytest.mark.django_db(transaction=True)

CATEGORIES = ["billing", "security"]
KEYS = ["build-1", "build-2"]
TIMEOUT = 3


def shown_fields(payload: dict) -> dict:
    """A notification as a list shows it: every field but the receipts (an ack is not a journal step)."""
    return {k: v for k, v in payload.items() if k not in ("delivered_at", "state")} | {"read": payload["read_at"] is not None}


class InboxMachine(RuleBasedStateMachine):
    user = other = sender = None  # set by the test
    token = ""
    totals = {
        "steps": 0, "frames": 0, "sends": 0, "reconnects": 0, "duplicates": 0, "foreign": 0, "checks": 0,
        "resumes": 0, "replayed": 0, "reconnects_since": 0,
    }

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
        self.seq: int | None = None  # the highest journal step the client saw (None before a sync.done)
        self.unread_seen: int | None = None
        # The client that went away: its list (id -> the notification as it showed it) and its step.
        self.away: tuple[dict[int, dict], int] | None = None
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
        if isinstance(frame.get("seq"), int) and not frame.get("catchup") and self.seq is not None:
            self.seq = max(self.seq, frame["seq"])
        if kind == "notification.updated":
            n = frame["notification"]
            self.view[n["id"]] = n["read_at"] is not None  # an edit, or a replayed row as it is now
            self.ever_received.add(n["id"])
            self.unread_seen = frame["unread"]
        elif kind == "notification.created":
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
            assert frame["more"] is False
            self.seq = max(self.seq or 0, frame["seq"])
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

    def socket(self, query: str) -> WebsocketCommunicator:
        from notifications_site.asgi import application

        return WebsocketCommunicator(
            application, f"/ws/notifications/?{query}", headers=[(b"origin", b"http://127.0.0.1")], subprotocols=["bearer", self.token]
        )

    def connect(self, *, by_seq: bool = False) -> None:
        async def go(query):
            self.ws = self.socket(query)
            connected, _ = await self.ws.connect(TIMEOUT)
            assert connected
            await self.frames_until("sync.done")

        if by_seq and self.seq is not None:
            # The journal replays every change since the client's step: no REST refresh needed.
            InboxMachine.totals["reconnects_since"] += 1
            self.run(go(f"since={self.seq}"))
            return
        self.run(go(f"after={self.last_id}"))
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
    @rule(by_seq=st.booleans())
    def reconnect(self, by_seq):
        InboxMachine.totals["reconnects"] += 1
        self.connect(by_seq=by_seq)

    @rule(key=st.sampled_from(KEYS), bulk=st.booleans(), mark_unread=st.booleans())
    def send_keyed(self, key, bulk, mark_unread):
        """A send with a key: a new row the first time, the same row updated in place after (issue 21)."""
        recipients = [self.user, self.other] if bulk else [self.user]
        self.run(database_sync_to_async(services.notification_create)(
            sender=self.sender, recipients=recipients, title=f"{key} now", key=key, mark_unread=mark_unread,
        ))
        InboxMachine.totals["keyed_sends"] = InboxMachine.totals.get("keyed_sends", 0) + 1
        assert Notification.objects.filter(recipient=self.user, key=key).count() == 1

    @rule(key=st.sampled_from(KEYS), everyone=st.booleans())
    def sender_retracts(self, key, everyone):
        """The sender retracts a key: the row goes, buried in the journal as retracted (issue 21)."""
        from inbox.services.keys import notification_retract

        recipient_ids = None if everyone else [self.user.pk]
        self.run(database_sync_to_async(notification_retract)(key=key, recipient_ids=recipient_ids, sender=self.sender))
        InboxMachine.totals["retractions"] = InboxMachine.totals.get("retractions", 0) + 1
        assert not Notification.objects.filter(recipient=self.user, key=key).exists()

    @precondition(lambda self: self.has_own())
    @rule(data=st.data())
    def operator_edits(self, data):
        """An operator changes a title in the admin: a step of the journal, pushed as notification.updated."""
        nid = data.draw(st.sampled_from(sorted(self.db_rows())))

        def edit():
            with transaction.atomic():
                n = Notification.objects.get(pk=nid)
                n.title = f"edited {n.seq}"
                n.save(update_fields=["title"])
                services.notification_push_updated(notification=n)

        self.run(database_sync_to_async(edit)())

    @precondition(lambda self: self.has_own())
    @rule(data=st.data())
    def operator_deletes(self, data):
        ids = set(data.draw(st.lists(st.sampled_from(sorted(self.db_rows())), min_size=1, max_size=2, unique=True)))
        rows = list(Notification.objects.filter(pk__in=ids))
        self.run(database_sync_to_async(services.notification_admin_delete)(notifications=rows))

    # --- the client that goes away and resumes by journal step ------------------------------------

    def db_payloads(self) -> dict[int, dict]:
        rows = Notification.objects.for_user(self.user.pk).unexpired().select_related("sender").order_by("id")
        return {n.id: notification_payload(n) for n in rows}

    @precondition(lambda self: self.away is None)
    @rule()
    def second_client_goes_away(self):
        # Its list as it showed it, and the step of its last sync.done (read the same instant).
        self.away = (self.db_payloads(), journal.position(self.user.pk).top)

    @precondition(lambda self: self.away is not None)
    @rule(stay_away=st.booleans())
    def second_client_resumes_since_its_step(self, stay_away):
        shown, since = self.away

        async def go():
            ws = self.socket(f"since={since}")
            connected, _ = await ws.connect(TIMEOUT)
            assert connected
            frames = []
            while True:
                frame = await ws.receive_json_from(TIMEOUT)
                if frame["type"] == "sync.done":
                    break
                frames.append(frame)
            await ws.disconnect()
            return frames, frame

        frames, done = self.run(go())
        InboxMachine.totals["resumes"] += 1
        InboxMachine.totals["replayed"] += len(frames)
        seen: list[int] = []
        view = dict(shown)
        for frame in frames:
            assert frame["replay"] is True and frame["seq"] > since, frame
            if frame["type"] == "notification.deleted":
                seen += frame["ids"]
                for nid in frame["ids"]:
                    view.pop(nid, None)
            else:
                n = frame["notification"]
                assert (frame["type"] == "notification.created") == (n["id"] > since), frame
                seen.append(n["id"])
                view[n["id"]] = n
        assert len(seen) == len(set(seen)), f"a change was replayed twice: {seen}"
        steps = [f["seq"] for f in frames]
        assert steps == sorted(steps), f"replayed out of order: {steps}"
        assert {i: shown_fields(n) for i, n in sorted(view.items())} == {i: shown_fields(n) for i, n in self.db_payloads().items()}, (
            "the resumed list differs from the database"
        )
        assert done["seq"] == journal.position(self.user.pk).top and done["more"] is False
        self.away = (view, done["seq"]) if stay_away else None

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
    assert InboxMachine.totals["resumes"] > 0 and InboxMachine.totals["replayed"] > 0 and InboxMachine.totals["reconnects_since"] > 0
