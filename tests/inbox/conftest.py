"""Fixtures of the inbox tests: captured fan-out events, clean throttle counters."""

from __future__ import annotations

import orjson
import pytest


class PushedEvents(list):
    """
    Every (user id, frame) that the WebSocket backend published, in order: the frame (decoded) is
    what each open socket of that user is sent. ``messages`` keeps the layer messages.
    """

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[tuple[int, dict]] = []

    def record(self, batch) -> None:
        for user_id, message in batch:
            self.messages.append((user_id, message))
            self.append((user_id, orjson.loads(message["frame"])))

    def of_type(self, event_type: str) -> list:
        return [(uid, msg) for uid, msg in self if msg["type"] == event_type]

    def users(self) -> list[int]:
        return [uid for uid, _ in self]


@pytest.fixture
def pushed(monkeypatch):
    """
    Record the fan-out instead of sending it: ``realtime.publisher.publish`` is the single point
    where events leave the process (Zulip's capture_send_event_calls does the same).
    """
    from realtime import publisher

    events = PushedEvents()
    monkeypatch.setattr(publisher, "publish", events.record)
    return events


@pytest.fixture
def sender_client(service_account, client_for):
    return client_for(service_account)


@pytest.fixture
def alice_client(alice, client_for):
    return client_for(alice)


@pytest.fixture
def bob_client(bob, client_for):
    return client_for(bob)


@pytest.fixture
def sender_api(service_account, client_for):
    """The sender's client, answering a server error as a 500 response instead of raising it."""
    return client_for(service_account, raise_exceptions=False)


@pytest.fixture
def alice_api(alice, client_for):
    """Alice's client, answering a server error as a 500 response instead of raising it."""
    return client_for(alice, raise_exceptions=False)
