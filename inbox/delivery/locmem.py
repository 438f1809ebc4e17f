"""A backend that keeps what it is given, in memory, for tests (as Django's locmem e-mail backend)."""

from __future__ import annotations

from collections.abc import Sequence

from ..events import Event
from .base import DeliveryBackend

#: Every event any RecordingBackend was given, in order (tests empty it).
outbox: list[Event] = []


class RecordingBackend(DeliveryBackend):
    def deliver(self, events: Sequence[Event]) -> None:
        outbox.extend(events)
