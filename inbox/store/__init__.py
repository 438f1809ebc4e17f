"""
The store: the one home of a send's write path, whichever database holds the rows.

``insert_notifications(send, announce=...)`` writes one notification per recipient and returns the
new ids and the recipients' unread counts. On PostgreSQL a send is one call of a PL/pgSQL function
(store/sql/, each function's canonical definition), small sends outside a transaction written
together by group commit (store/group_commit.py); on any other database (SQLite), and on
PostgreSQL for a user model keyed by a UUID or a string, it goes through the ORM (store/sqlite.py). ``announce`` is called once per send after its write: on the group
commit path from the thread that wrote the batch, in the batch's id order, so that a client never
sees a higher id announced before a lower one.
"""

from __future__ import annotations

from django.db import connection

from . import postgres, sqlite
from .base import Announce, InactiveRecipients, NewSend, UserId, integer_user_keys
from .postgres import bigint_array

__all__ = ["Announce", "InactiveRecipients", "NewSend", "UserId", "bigint_array", "insert_notifications", "integer_user_keys"]


def insert_notifications(send: NewSend, *, announce: Announce) -> tuple[list[int], dict[UserId, int]]:
    """
    Store ``send``'s rows, call ``announce(send, ids, unread)`` once they are written, and return
    ``(ids, unread)``: the new ids in ``send.recipient_ids`` order, and each recipient's unread
    count including them. Raises InactiveRecipients, with nothing stored, when a recipient is not
    an active user.
    """
    if connection.vendor == "postgresql":
        if integer_user_keys():
            return postgres.insert_notifications(send, announce=announce)
        return postgres.insert_any_key(send, announce=announce)
    return sqlite.insert_notifications(send, announce=announce)
