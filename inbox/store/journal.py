"""
A user's change journal (issue 21; docs/feed.md, "The change journal"): every change to one of a
user's notifications, in the transaction that makes it, takes a number from ``advance``; the row's
``seq`` is set to it (``stamp``), or a ``Tombstone`` carries it when the row goes away (``bury``).
For one user the numbers increase in commit order, so "every change after N" (``Notification.seq >
N`` and the tombstones after N) never misses a change that committed late, the guarantee ids give
new rows.

One counter for ids and journal steps (migration 0015): a new row's ``seq`` is its id (a trigger
sets it), a later change takes the next value of the same counter: PostgreSQL's id sequence, or
SQLite's AUTOINCREMENT counter. So a created frame's ``seq`` is its id, rendered for free on the
send's fast path, and a row with an id above N is one a client at N cannot have had.

Order per user: the number is drawn while the user's lock is held to the end of the transaction
(PostgreSQL: the advisory lock bucket a send takes, store/postgres.py; SQLite: the IMMEDIATE
transaction's write lock), and a send draws its ids under the same lock.

One number per user per call: everything a call changes for a user shares it (a mark-all-read of
10,000 rows is one step of the journal). Receipts (``delivered_at``, an ack) are not changes a
person sees and do not advance it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import NamedTuple

from django.db import connection
from django.db.models import Q

from ..models import JournalFloor, Notification, Tombstone
from .base import UserId, integer_user_keys


def hold(user_ids: Collection[UserId]) -> None:
    """
    Inside a transaction: take the users' journal locks now, until it ends. A change that locks
    rows calls this first, so every writer takes the user's lock before the rows' locks (a send
    that updates a row by its key does so; the other order could deadlock).
    """
    if connection.vendor != "postgresql" or not user_ids:
        return  # SQLite: the IMMEDIATE transaction already holds the database's write lock
    from .postgres import LOCK_NAMESPACE, key_lock_buckets, lock_buckets

    buckets = lock_buckets(user_ids) if integer_user_keys() else key_lock_buckets(user_ids)
    with connection.cursor() as cursor:
        if len(buckets) == 1:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, buckets[0]])
        else:
            cursor.executemany("SELECT pg_advisory_xact_lock(%s, %s)", [(LOCK_NAMESPACE, b) for b in buckets])


def _draw(count: int) -> list[int]:
    """``count`` new numbers of the counter ids share, ascending."""
    table = Notification._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # inbox_journal_next(): nextval of the id sequence (migration 0015).
            cursor.execute("SELECT inbox_journal_next() FROM generate_series(1, %s) ORDER BY 1", [count])
            return [row[0] for row in cursor.fetchall()]
        # SQLite: the AUTOINCREMENT counter (migration 0015 made sure its row exists).
        cursor.execute("UPDATE sqlite_sequence SET seq = seq + %s WHERE name = %s", [count, table])
        if cursor.rowcount == 0:
            # Gone after a flush that reset the sequences (tests): start past the highest id.
            cursor.execute(
                f"INSERT INTO sqlite_sequence (name, seq) SELECT %s, coalesce(max(id), 0) + %s FROM {connection.ops.quote_name(table)}",
                [table, count],
            )
        cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
        top = cursor.fetchone()[0]
    return list(range(top - count + 1, top + 1))


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
    hold(users)
    return dict(zip(users, _draw(len(users))))


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


# --- Reading the journal -----------------------------------------------------------------------------


class Position(NamedTuple):
    """Where a user's journal stands: ``floor`` (resuming below it needs a reset) and ``top`` (the newest number)."""

    floor: int
    top: int


def position(user_id: UserId) -> Position:
    """One query, three index lookups: the floor, the user's newest row step and newest tombstone."""
    from django.contrib.auth import get_user_model

    quote = connection.ops.quote_name
    # Raw SQL: the key as the database takes it (a UUID is text on SQLite, uuid on PostgreSQL).
    user_id = get_user_model()._meta.pk.get_db_prep_value(user_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT seq FROM {quote(JournalFloor._meta.db_table)} WHERE user_id = %s),"
            f" (SELECT max(seq) FROM {quote(Notification._meta.db_table)} WHERE recipient_id = %s),"
            f" (SELECT max(seq) FROM {quote(Tombstone._meta.db_table)} WHERE user_id = %s)",
            [user_id, user_id, user_id],
        )
        floor, rows, gone = cursor.fetchone()
    floor = floor or 0
    return Position(floor, max(floor, rows or 0, gone or 0))


class Change(NamedTuple):
    """One entry of a replay: the row as it is now (``notification``), or its tombstone (``reason``)."""

    seq: int
    id: int
    notification: Notification | None = None
    reason: str | None = None


def changes(user_id: UserId, *, since: int, after_id: int | None = None, limit: int, upto: int | None = None) -> list[Change]:
    """
    The user's changes after ``(since, after_id)`` in journal order (seq, then id), at most
    ``limit``: each visible row whose ``seq`` is greater, once, as it is now, and each tombstone.
    ``after_id`` (None: after the whole step ``since``) resumes inside one journal step (a step of 10,000 rows spans several pages);
    ``upto`` stops at a step.
    """
    rows = Notification.objects.for_user(user_id).unexpired().filter(seq__gt=since)
    gone = Tombstone.objects.filter(user_id=user_id).filter(seq__gt=since)
    if after_id is not None:
        rows = Notification.objects.for_user(user_id).unexpired().filter(Q(seq__gt=since) | Q(seq=since, id__gt=after_id))
        gone = Tombstone.objects.filter(user_id=user_id).filter(Q(seq__gt=since) | Q(seq=since, notification_id__gt=after_id))
    if upto is not None:
        rows, gone = rows.filter(seq__lte=upto), gone.filter(seq__lte=upto)
    rows = list(rows.select_related("sender").order_by("seq", "id")[:limit])
    gone = list(gone.order_by("seq", "notification_id").values_list("seq", "notification_id", "reason")[:limit])
    merged = [Change(n.seq, n.id, notification=n) for n in rows] + [Change(s, i, reason=r) for s, i, r in gone]
    merged.sort(key=lambda c: (c.seq, c.id))
    return merged[:limit]
