"""
The feed's path of a send (issue 21, docs/feed.md "Keys, groups, states and actions"): a send with a
``key``, a ``group`` or ``actions``. The fast path (the insert functions, group commit) never sees
one, so it stays what it was.

Through the ORM, in one transaction, under the recipients' locks (``journal.hold``: the advisory
lock buckets the PostgreSQL insert functions take, SQLite's write lock), taken before any row is
read: two sends with one key to one recipient run one after the other, and the second finds the
first's row and updates it, so a key never makes two rows (the unique constraint
``inbox_recipient_key`` is the last word). New ids are still drawn in commit order per recipient.

A row updated by its key keeps its id and takes the send's fields; it is a step of its recipient's
journal (``journal.advance``). A new row's journal number is its id, as on every path.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import NamedTuple

from django.db import transaction
from django.db.models import Count

from .. import selectors
from ..models import Notification
from . import journal
from .base import InactiveRecipients, NewSend, UserId
from .sqlite import active_users

#: The fields a later send with the same key replaces (created_at too: the row shows the latest send).
UPDATED_FIELDS = ("sender_id", "category", "title", "message", "data", "link", "created_at", "expires_at", "group", "actions")


class KeyedWrite(NamedTuple):
    """What ``write_keyed`` did: ``ids`` in ``send.recipient_ids`` order; which were new and which updated."""

    ids: list[int]
    created: list[tuple[UserId, int]]  # (recipient, id) of each new row, in id order
    updated: list[int]  # ids updated in place by the key
    unread: dict[UserId, int]
    group_counts: dict[UserId, int]  # members of ``send.group`` per recipient after the write ({} without a group)


def write_keyed(
    send: NewSend, *, active_recipients: Callable[[Collection[UserId]], set[UserId]] = active_users
) -> KeyedWrite:
    """
    Write ``send`` (which has a key, a group or actions): with a key, each recipient's row of that
    key is updated in place, or created; without one, a row per recipient as any send. Raises
    InactiveRecipients, with nothing written, when a recipient is not an active user.
    """
    # With a key a recipient named twice has one row (the key is per recipient); without one, two.
    recipients = list(dict.fromkeys(send.recipient_ids)) if send.key else list(send.recipient_ids)
    users = list(dict.fromkeys(recipients))
    fields = {
        "sender_id": send.sender_id, "category": send.category, "title": send.title, "message": send.message,
        "data": send.data, "link": send.link, "created_at": send.created_at, "expires_at": send.expires_at,
        "group": send.group, "actions": list(send.actions),
    }
    with transaction.atomic():
        journal.hold(users)  # before any row is read or locked (store/journal.py)
        active = active_recipients(users)
        if not active.issuperset(users):
            raise InactiveRecipients([rid for rid in users if rid not in active])
        existing: dict[UserId, int] = {}
        if send.key:
            existing = dict(
                Notification.objects.select_for_update()
                .filter(recipient_id__in=users, key=send.key)
                .values_list("recipient_id", "id")
            )
        new_rows = [Notification(recipient_id=rid, key=send.key, **fields) for rid in recipients if rid not in existing]
        made = Notification.objects.bulk_create(new_rows, batch_size=2000) if new_rows else []
        created = sorted(((n.recipient_id, n.id) for n in made), key=lambda pair: pair[1])
        if existing:
            changes = dict(fields)
            if send.mark_unread:
                # News again: unread, unseen, out of the archive, pending for the catch-up, not clicked.
                changes.update(read_at=None, seen_at=None, archived_at=None, delivered_at=None, interacted_at=None)
            steps = journal.advance(existing)
            if len(existing) == 1:  # the common case: one statement
                ((rid, nid),) = existing.items()
                Notification.objects.filter(pk=nid).update(**changes, seq=steps[rid])
            else:
                Notification.objects.filter(pk__in=list(existing.values())).update(**changes)
                rows = [Notification(pk=nid, seq=steps[rid]) for rid, nid in existing.items()]
                Notification.objects.bulk_update(rows, ["seq"], batch_size=2000)
        group_counts: dict[UserId, int] = {}
        if send.group:
            group_counts = dict.fromkeys(users, 0)
            group_counts.update(
                Notification.objects.filter(recipient_id__in=users, group=send.group, archived_at__isnull=True)
                .unexpired()
                .order_by()
                .values_list("recipient_id")
                .annotate(n=Count("id"))
            )
        unread = selectors.notification_unread_counts(user_ids=users)
    by_recipient = {**existing, **{rid: nid for rid, nid in created}} if send.key else None
    ids = [by_recipient[rid] for rid in send.recipient_ids] if by_recipient is not None else [n.id for n in made]
    return KeyedWrite(ids=ids, created=created, updated=sorted(existing.values()), unread=unread, group_counts=group_counts)
