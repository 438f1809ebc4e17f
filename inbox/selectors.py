"""
Reads. Every selector takes the user and can only return that user's rows.
"""

import functools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import QuerySet

from . import directory
from .models import Notification
from .store import bigint_array, integer_user_keys, unread

User = get_user_model()


def notification_list_for_user(
    *, user, unread: bool | None = None, category: str | None = None, after: int | None = None, archived: bool | None = False
) -> QuerySet[Notification]:
    """
    The user's unexpired notifications, newest first (oldest first with ``after``): those not
    archived (``archived=True``: only the archived, None: both).
    """
    qs = Notification.objects.for_user(user.pk).unexpired().select_related("sender")
    if archived is not None:
        qs = qs.filter(archived_at__isnull=not archived)
    if unread is True:
        qs = qs.filter(read_at__isnull=True)
    elif unread is False:
        qs = qs.filter(read_at__isnull=False)
    if category:
        qs = qs.filter(category=category)
    if after is not None:
        return qs.filter(id__gt=after).order_by("id")
    return qs.order_by("-id")


def notification_get_for_user(*, user, notification_id: int) -> Notification | None:
    return (
        Notification.objects.for_user(user.pk)
        .unexpired()
        .select_related("sender")
        .filter(pk=notification_id)
        .first()
    )


def notification_unread_count(*, user_id: int) -> int:
    """Unread and unexpired (on PostgreSQL a counter, not a count of the rows: store/unread.py)."""
    return unread.count(user_id)


def notification_unseen_count(*, user_id: int) -> int:
    """Unseen and not archived (archiving sees a notification), unexpired: the badge of Knock's and Novu's kind."""
    return Notification.objects.for_user(user_id).filter(seen_at__isnull=True, archived_at__isnull=True).unexpired().count()


def notification_unread_counts(*, user_ids: Iterable[int], chunk: int = 2000) -> dict[int, int]:
    """Unread counts of many users in a few statements (users with none are 0)."""
    return unread.counts(user_ids, chunk=chunk)


def notification_catchup(
    *, user_id: int, after: int | None, limit: int, pending: bool = False, upto: int | None = None
) -> list[Notification]:
    """
    What a reconnecting client missed, oldest first: the user's notifications with an id above
    ``after`` (all of them when ``after`` is None), only the never-acknowledged ones when
    ``pending``, none above ``upto``. Expired ones are left out.
    """
    qs = Notification.objects.for_user(user_id).unexpired().select_related("sender")
    if pending:
        qs = qs.filter(delivered_at__isnull=True)
    if after is not None:
        qs = qs.filter(id__gt=after)
    if upto is not None:
        qs = qs.filter(id__lte=upto)
    return list(qs.order_by("id")[:limit])


def notification_newest_id(*, user_id: int) -> int:
    return Notification.objects.for_user(user_id).order_by("-id").values_list("id", flat=True).first() or 0


class Recipient(NamedTuple):
    """A resolved recipient: what a send needs of a user (``pk``: an int, or the host's UUID or string key)."""

    pk: object
    username: str


@functools.cache
def _recipient_queries() -> tuple[str, str]:
    """PostgreSQL's two lookups of active recipients, by ids and by usernames, for the user model's own columns."""
    quote = connection.ops.quote_name
    table, pk = quote(User._meta.db_table), quote(User._meta.pk.column)
    name, active = quote(User._meta.get_field(User.USERNAME_FIELD).column), quote(User._meta.get_field("is_active").column)
    return (
        f"SELECT {pk}, {name} FROM {table} WHERE {pk} = ANY(%s::bigint[]) AND {active}",
        f"SELECT {pk}, {name} FROM {table} WHERE {name} = ANY(%s) AND {active}",
    )


def user_resolve_recipients(*, refs: Sequence[int | str]) -> tuple[list, list[int | str]]:
    """
    Map recipient references (an int is a user id, a string a username) to active users.
    Returns the users (in first-seen order, without duplicates) and the references that match no
    active user. Users found are remembered per process for a few seconds (inbox/directory.py).
    With a user model keyed by a UUID or a string, an int names no one (name such users by their
    username, or by external id).
    """
    by_id, by_name = {}, {}
    for r in refs:
        found = directory.recipients.get(r)
        if found is not None:
            (by_id if isinstance(r, int) else by_name)[r] = found
    ids = list({r for r in refs if isinstance(r, int) and r not in by_id}) if integer_user_keys() else []
    names = list({r for r in refs if isinstance(r, str) and r not in by_name})
    username = User.USERNAME_FIELD
    # Plain (id, username) rows, not User instances: a 10,000-recipient send resolves in a
    # third of the time.
    if not ids and not names:
        pass  # every recipient was known to this process
    elif connection.vendor == "postgresql":
        # One array parameter: 10,000 placeholders cost psycopg more than the query (bench/
        # profile of a broadcast: 11% of the servers' samples in psycopg's _split_query).
        by_ids_sql, by_names_sql = _recipient_queries()
        with connection.cursor() as cursor:
            if ids:
                cursor.execute(by_ids_sql, [bigint_array(ids)])
                by_id.update((pk, Recipient(pk, name)) for pk, name in cursor.fetchall())
            if names:
                cursor.execute(by_names_sql, [names])
                by_name.update((name, Recipient(pk, name)) for pk, name in cursor.fetchall())
    else:
        for start in range(0, len(ids), 5000):
            rows = User._default_manager.filter(pk__in=ids[start : start + 5000], is_active=True).values_list("pk", username)
            by_id.update((pk, Recipient(pk, name)) for pk, name in rows)
        for start in range(0, len(names), 5000):
            rows = User._default_manager.filter(
                **{f"{username}__in": names[start : start + 5000]}, is_active=True
            ).values_list("pk", username)
            by_name.update((name, Recipient(pk, name)) for pk, name in rows)
    for found, asked in ((by_id, ids), (by_name, names)):
        for r in asked:
            if r in found:
                directory.recipients.set(r, found[r])
    users, seen, unknown = [], set(), []
    for r in refs:
        u = by_id.get(r) if isinstance(r, int) else by_name.get(r)
        if u is None:
            unknown.append(r)
        elif u.pk not in seen:
            seen.add(u.pk)
            users.append(u)
    return users, unknown
