"""
Users' unread counts: unread notifications that have not expired.

On PostgreSQL the count is ``inbox_unread(user, now)`` (store/sql/unread_counter.sql): a counter per
user that the table's triggers keep, plus the unread rows whose expiry is still ahead. Its cost does
not grow with the user's inbox (bench/JOURNAL.md, finding 76). On SQLite the rows are counted.
Both give the same number; tests/inbox/store/test_unread.py holds them to it after every kind of
write.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from ..models import Notification
from .base import UserId, integer_user_keys
from .postgres import bigint_array


def count(user_id: UserId, *, now: datetime | None = None) -> int:
    """``user_id``'s unread, unexpired notifications at ``now`` (default: now), by SQL built once."""
    now = Notification._meta.get_field("expires_at").get_db_prep_value(now or timezone.now(), connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT ({count_sql(connection.vendor)})", [_key(user_id), now])
        return cursor.fetchone()[0]


@functools.cache
def count_sql(vendor: str) -> str:
    """
    A query of one value, the unread count of a user (its first parameter, a prepared key) at a time
    (its second): ``inbox_unread()`` on PostgreSQL, the rows counted through the ``inbox_unread``
    index elsewhere. ``count()`` runs it, store/connect.py's snapshot embeds it.
    """
    if vendor == "postgresql":
        return f"SELECT u.unread FROM inbox_unread(%s::{recipient_type()}, %s) AS u"
    quote, field = connection.ops.quote_name, Notification._meta.get_field
    expires = quote(field("expires_at").column)
    return (
        f"SELECT count(*) FROM {quote(Notification._meta.db_table)} WHERE {quote(field('recipient').column)} = %s"
        f" AND {quote(field('read_at').column)} IS NULL AND ({expires} IS NULL OR {expires} > %s)"
    )


def counts(user_ids: Iterable[UserId], *, now: datetime | None = None, chunk: int = 2000) -> dict[UserId, int]:
    """The unread counts of many users (0 for those with none), in a few statements."""
    now = now or timezone.now()
    ids = sorted(set(user_ids))
    result = dict.fromkeys(ids, 0)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        if connection.vendor == "postgresql":
            keys = bigint_array(part) if integer_user_keys() else [_key(u) for u in part]
            with connection.cursor() as cursor:
                cursor.execute(_counts_sql(), [keys, now])
                rows = cursor.fetchall()
        else:
            rows = (
                Notification.objects.filter(recipient_id__in=part).unread().unexpired(now)
                .order_by().values_list("recipient_id").annotate(n=Count("id"))
            )
        result.update((_user(u), n) for u, n in rows if n)
    return result


def _key(user_id: UserId):
    return Notification._meta.get_field("recipient").get_db_prep_value(user_id, connection)


def _user(value) -> UserId:
    return Notification._meta.get_field("recipient").to_python(value)


def argument_type(column_type: str) -> str:
    """
    The type of ``inbox_unread()``'s first argument for a recipient column of ``column_type``:
    bigint for any integer (Django's own user is keyed by an ``integer``, the send functions pass
    ``bigint``: an integer widens to a bigint, never the other way), else the column's own type.
    """
    return "bigint" if column_type in ("smallint", "integer", "bigint") else column_type


def recipient_type() -> str:
    """The SQL type of ``inbox_unread()``'s first argument for this project's user model."""
    return argument_type(Notification._meta.get_field("recipient").db_type(connection))


@functools.cache
def _counts_sql() -> str:
    return f"SELECT t.u, c.unread FROM unnest(%s::{recipient_type()}[]) AS t(u), LATERAL inbox_unread(t.u, %s) AS c"
