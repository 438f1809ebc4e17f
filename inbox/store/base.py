"""What the store is given and what it raises, whichever database writes the send."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple


class NewSend(NamedTuple):
    """
    One send: the same notification for every recipient, ``recipient_ids`` in order (a recipient
    may appear twice). ``context`` is the caller's own, handed back to its ``announce`` untouched.
    """

    recipient_ids: list[int]
    sender_id: int | None
    category: str
    title: str
    message: str
    data: dict
    link: str
    created_at: datetime
    expires_at: datetime | None
    context: Any = None


#: ``announce(send, ids, unread)``: called once per send after its rows are written, with the new
#: ids in ``recipient_ids`` order and each recipient's unread count including them.
Announce = Callable[[NewSend, list[int], dict[int, int]], None]


class InactiveRecipients(Exception):
    """Some recipients are not active users (``ids``); nothing was stored."""

    def __init__(self, ids: Sequence[int]) -> None:
        super().__init__(", ".join(map(str, ids)))
        self.ids = frozenset(ids)
