"""The contract a delivery backend implements (django-anymail's ``backends/base.py`` is the model)."""

from __future__ import annotations

from collections.abc import Sequence

from ..events import Event


class DeliveryBackend:
    """
    Carries committed domain events to people. ``deliver`` is called after commit, from whatever
    thread committed (a request thread, group commit's writer, a management command), with events in
    the order they happened; it must return quickly (hand slow work to a queue or a loop) and may
    ignore event types it does not carry.
    """

    def deliver(self, events: Sequence[Event]) -> None:
        raise NotImplementedError

    def reach(self) -> str | None:
        """
        One line for an operator on what becomes of an event this process delivers (the ``notify``
        command prints it), or None to say nothing.
        """
        return None
