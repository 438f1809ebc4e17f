"""
A user's change journal (issue 21): every change to one of a user's notifications, in the
transaction that makes it, takes a sequence number from ``advance``; the row's ``seq`` is set to it
(``stamp``), or a ``Tombstone`` carries it when the row goes away (``bury``). For one user the
numbers increase in commit order, so "every change after N" (``Notification.seq > N`` and the
tombstones after N) never misses a change that committed late, the same guarantee ids give new rows.

One number per user per transaction: everything a transaction changes for a user shares it (a
mark-all-read of 10,000 rows is one step of the journal). Receipts (``delivered_at``, an ack) are
not changes a person sees and do not advance it.

How the order is kept: on PostgreSQL the user's advisory lock bucket (the one a send takes,
store/postgres.py), held to the end of the transaction, then the next number after the user's
highest; on SQLite the IMMEDIATE transaction's write lock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from django.db import connection
from django.db.models import Max

from ..models import JournalFloor, Notification, Tombstone
from .base import UserId, integer_user_keys


def _lock(user_ids: Collection[UserId]) -> None:
    if connection.vendor != "postgresql":
        return  # SQLite: the IMMEDIATE transaction already holds the database's write lock
    from .postgres import LOCK_NAMESPACE, key_lock_buckets, lock_buckets

    buckets = lock_buckets(user_ids) if integer_user_keys() else key_lock_buckets(user_ids)
    with connection.cursor() as cursor:
        cursor.executemany("SELECT pg_advisory_xact_lock(%s, %s)", [(LOCK_NAMESPACE, b) for b in buckets])


def advance(user_ids: Iterable[UserId]) -> dict[UserId, int]:
    """
    Inside the caller's transaction: one new sequence number per user, greater than any the user's
    committed changes carry. The user's lock is held until the transaction ends, so the numbers of
    one user commit in increasing order.
    """
    users = sorted(set(user_ids), key=str)
    if not users:
        return {}
    assert connection.in_atomic_block, "journal.advance() must run inside the change's transaction"
    _lock(users)
    top: dict[UserId, int] = {u: 0 for u in users}
    for model, field in ((Notification, "recipient_id"), (Tombstone, "user_id"), (JournalFloor, "user_id")):
        rows = model.objects.filter(**{f"{field}__in": users}).values(field).annotate(top=Max("seq"))
        for row in rows:
            top[row[field]] = max(top[row[field]], row["top"] or 0)
    return {u: n + 1 for u, n in top.items()}


def stamp(user_id: UserId, ids: Collection[int]) -> int:
    """Inside the change's transaction: give these rows of ``user_id`` the user's next number; returns it."""
    seq = advance([user_id])[user_id]
    if ids:
        Notification.objects.filter(recipient_id=user_id, pk__in=list(ids)).update(seq=seq)
    return seq


def bury(user_id: UserId, ids: Collection[int], reason: str = Tombstone.Reason.DELETED) -> int:
    """Inside the removal's transaction: a tombstone for each of these ids, with the user's next number."""
    seq = advance([user_id])[user_id]
    Tombstone.objects.bulk_create(Tombstone(user_id=user_id, notification_id=i, seq=seq, reason=reason) for i in sorted(ids))
    return seq
