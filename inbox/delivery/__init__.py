"""
The delivery port: the one door through which the domain announces events to whoever carries them.

Services call ``publish_on_commit(event)`` and nothing else: the event is handed to every backend
named in ``INBOX["DELIVERY_BACKENDS"]`` after the caller's transaction commits (at once outside a
transaction), never for a rollback. A backend is a class with ``deliver(events)``
(``inbox.delivery.base.DeliveryBackend``), chosen by dotted path as Django chooses an
``EMAIL_BACKEND``. A backend that raises is logged and skipped: a write never fails because a
carrier did, and clients catch up from the database.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..conf import inbox_setting
from ..events import Event
from .base import DeliveryBackend

logger = logging.getLogger(__name__)

__all__ = ["DeliveryBackend", "backends", "deliver", "publish_on_commit"]

_backends: tuple[DeliveryBackend, ...] | None = None


def backends() -> tuple[DeliveryBackend, ...]:
    """The configured backends, built once per process (again after a settings change in tests)."""
    global _backends
    if _backends is None:
        _backends = tuple(import_string(path)() for path in inbox_setting("DELIVERY_BACKENDS"))
    return _backends


@receiver(setting_changed)
def _forget_backends(*, setting, **kwargs) -> None:
    global _backends
    if setting == "INBOX":
        _backends = None


def deliver(events: Sequence[Event]) -> None:
    """Hand committed events to every backend now. Never raises."""
    if not events:
        return
    for backend in backends():
        try:
            backend.deliver(events)
        except Exception:  # a carrier must never break the write that caused the event
            logger.exception("delivery: %s could not deliver %d event(s)", type(backend).__name__, len(events))


def publish_on_commit(event: Event) -> None:
    """Deliver ``event`` once the current transaction commits (at once outside one; never on rollback)."""
    transaction.on_commit(partial(deliver, (event,)), robust=True)
