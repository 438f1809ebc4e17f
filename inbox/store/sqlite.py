"""
The path of a send on any database but PostgreSQL (SQLite): the ORM, in one transaction. An
IMMEDIATE transaction holds SQLite's write lock from BEGIN to COMMIT, so ids are allocated in
commit order without the advisory locks of the PostgreSQL path.

PostgreSQL uses it too when the user model's key is not an integer (store/postgres.py,
``insert_any_key``), with ``active_recipients`` taking that path's locks first.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from django.contrib.auth import get_user_model
from django.db import transaction

# The module, not the function: inbox.selectors imports this package (bigint_array).
from .. import selectors
from ..models import Notification
from .base import Announce, InactiveRecipients, NewSend, UserId


def active_users(recipient_ids: Collection[UserId]) -> set[UserId]:
    """Which of ``recipient_ids`` are active users (SQLite's write lock keeps them so until commit)."""
    return set(get_user_model()._default_manager.filter(pk__in=recipient_ids, is_active=True).values_list("pk", flat=True))


def insert_notifications(
    send: NewSend, *, announce: Announce, active_recipients: Callable[[Collection[UserId]], set[UserId]] = active_users
) -> tuple[list[int], dict[UserId, int]]:
    """
    The ORM path of ``inbox.store.insert_notifications``: check, bulk insert, count, then announce.
    ``active_recipients(ids)`` answers which recipients are active users, inside the transaction,
    before anything is written.
    """
    recipient_ids = send.recipient_ids
    with transaction.atomic():
        active = active_recipients(recipient_ids)
        if not active.issuperset(recipient_ids):
            raise InactiveRecipients([rid for rid in recipient_ids if rid not in active])
        rows = [
            Notification(
                recipient_id=rid, sender_id=send.sender_id, category=send.category, title=send.title,
                message=send.message, data=send.data, link=send.link, created_at=send.created_at,
                expires_at=send.expires_at,
            )
            for rid in recipient_ids
        ]
        created = Notification.objects.bulk_create(rows, batch_size=2000)
        unread = selectors.notification_unread_counts(user_ids=[n.recipient_id for n in created])
    ids = [n.id for n in created]
    announce(send, ids, unread)
    return ids, unread
