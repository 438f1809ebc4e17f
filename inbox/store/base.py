"""What the store is given and what it raises, whichever database writes the send."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from django.core.signals import setting_changed
from django.dispatch import receiver

#: A user's primary key: an int for Django's default user model, or whatever the host's
#: AUTH_USER_MODEL uses (a UUID, a string).
UserId = Hashable


class NewSend(NamedTuple):
    """
    One send: the same notification for every recipient, ``recipient_ids`` in order (a recipient
    may appear twice), as the user model's primary keys (ints, or UUIDs or strings: see
    ``integer_user_keys``). ``context`` is the caller's own, handed back to its ``announce`` untouched.
    """

    recipient_ids: list[UserId]
    sender_id: UserId | None
    category: str
    title: str
    message: str
    data: dict
    link: str
    created_at: datetime
    expires_at: datetime | None
    context: Any = None
    # The feed's fields (issue 21, docs/feed.md): a send with any of them is written by
    # store/keyed.py (``write_keyed``), never by the insert functions.
    key: str = ""
    group: str = ""
    actions: tuple = ()
    mark_unread: bool = True


#: ``announce(send, ids, unread)``: called once per send after its rows are written, with the new
#: ids in ``recipient_ids`` order and each recipient's unread count including them.
Announce = Callable[[NewSend, list[int], dict[UserId, int]], None]


class InactiveRecipients(Exception):
    """Some recipients are not active users (``ids``); nothing was stored."""

    def __init__(self, ids: Sequence[UserId]) -> None:
        super().__init__(", ".join(map(str, ids)))
        self.ids = frozenset(ids)


@functools.cache
def integer_user_keys() -> bool:
    """
    Whether AUTH_USER_MODEL's primary key is an integer (AutoField, BigAutoField, IntegerField...).
    PostgreSQL's one-statement path and group commit pass recipients as ``bigint[]``; a host whose
    users are keyed by a UUID or a string goes through the ORM path instead (store/postgres.py,
    ``insert_any_key``), with the same per-recipient locks.
    """
    from django.contrib.auth import get_user_model
    from django.db import models

    return isinstance(get_user_model()._meta.pk, models.IntegerField)


@receiver(setting_changed)
def _forget_user_key_type(*, setting, **kwargs) -> None:
    if setting == "AUTH_USER_MODEL":
        integer_user_keys.cache_clear()
