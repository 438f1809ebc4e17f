"""
What a socket's connect reads, in two statements (issue 22; bench/JOURNAL.md, finding 61).

A connect asked the database six times, each query compiled by the ORM: the token's user with its
token version (before joining the user's group), the same again (after joining it), the unread
count, the newest id, the journal's position and the catch-up's first page. Here:

- ``token_user(user_id)``: the user a token names, with the version of its tokens that are still
  good (``inbox_token_version``), in one statement; inbox/directory.py remembers it.
- ``snapshot(user_id, ...)``: once the socket is in its group, one statement answers the rest:
  whether the token's user is still there (and active) at which token version, the unread count,
  the newest id, the journal's floor and top, and the first page of the catch-up (or of the
  replay by journal step: with its tombstones, a second statement when there are any to read).

Each statement's SQL is built once per process from the models' own tables and columns, and run
through ``Manager.raw`` (which turns columns into fields as the ORM does) or a plain cursor: no
SQL compilation per connect. Parameters go through the fields' ``get_db_prep_value``, so a key is
what the database takes (an int, a UUID, a string: a UUID is text on SQLite) and a time compares
as the ORM's would. The user's default manager is not asked: its filters, if a host's has any,
do not apply (as in every raw query of the store).

Within one statement, every subquery reads the same snapshot of the database (PostgreSQL's READ
COMMITTED takes one per statement; a SQLite statement runs in one read transaction): the first
page of the pending rows is bounded by the newest id of the same statement without saying so.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from rest_framework_simplejwt import settings as simplejwt

from ..models import JournalFloor, Notification, Tombstone, TokenVersion
from ..payloads import notification_payload
from . import unread
from .base import UserId
from .journal import Change

#: The first page of a snapshot: the pending rows (a connect without ``after``), the rows after an
#: id, the changes after a journal step (a resume with ``since``), or none.
PENDING, AFTER, JOURNAL, NONE = "pending", "after", "journal", "none"


class Snapshot(NamedTuple):
    """One user's state as one statement read it after the socket joined the user's group."""

    #: The user exists (and is active, when simplejwt's CHECK_USER_IS_ACTIVE asks for it).
    user_found: bool
    #: The version of the user's tokens that are still good (inbox.models.TokenVersion; 0 without a row).
    token_version: int
    unread: int
    #: The user's newest notification id, expired or not (0 without any).
    newest: int
    #: The journal's floor and newest step (inbox/store/journal.py, ``position``).
    floor: int
    top: int
    #: The first page of a catch-up (PENDING, AFTER), oldest first, as payloads (inbox/payloads.py).
    payloads: list[dict]
    #: The first page of a replay (JOURNAL), as ``journal.changes`` returns it.
    changes: list[Change]

    def token_good(self, version: int) -> bool:
        """Whether a token of ``version`` is still good for the user (``directory.token_user``'s rule)."""
        return self.user_found and self.token_version == version


def token_user(user_id: UserId):
    """
    The user simplejwt's USER_ID_FIELD ``user_id`` names (only an active one when
    CHECK_USER_IS_ACTIVE), with ``inbox_token_version``; None when there is none.
    """
    User, jwt = get_user_model(), simplejwt.api_settings  # read each time: a changed SIMPLE_JWT replaces it
    sql = _token_user_sql(settings.AUTH_USER_MODEL, connection.vendor, jwt.USER_ID_FIELD, jwt.CHECK_USER_IS_ACTIVE)
    key = User._meta.get_field(jwt.USER_ID_FIELD).get_db_prep_value(user_id, connection)
    for user in User._default_manager.raw(sql, [key], using=connection.alias):
        return user
    return None


def snapshot(user_id: UserId, *, page: str = NONE, after: int | None = None, since: int | None = None, limit: int = 0) -> Snapshot:
    """
    The user's state (``Snapshot``) and a first page of at most ``limit``: with ``page=PENDING``
    the unexpired notifications no client acknowledged, with ``page=AFTER`` the unexpired ones with
    an id above ``after``, oldest first (``selectors.notification_catchup``); with ``page=JOURNAL``
    ``journal.changes(user_id, since=since, limit=limit)``. ``user_id`` is the user's primary key.
    """
    key = get_user_model()._meta.pk.get_db_prep_value(user_id, connection)
    now = Notification._meta.get_field("expires_at").get_db_prep_value(timezone.now(), connection)
    sql = _snapshot_sql(settings.AUTH_USER_MODEL, connection.vendor, simplejwt.api_settings.CHECK_USER_IS_ACTIVE, page)
    params = [key, key, key, now, key, key, key, key]
    if page == NONE:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return _state(cursor.fetchone())
    params += {PENDING: [key, now, limit], AFTER: [key, after, now, limit], JOURNAL: [key, now, since, limit]}[page]
    rows = list(Notification.objects.raw(sql, params, using=connection.alias))
    first = rows[0]
    state = _state((
        first.inbox_user_found, first.inbox_token_version, first.inbox_unread, first.inbox_newest,
        first.inbox_floor, first.inbox_rows_top, first.inbox_gone_top,
    ))
    # No row in the page: the statement's one row is the state's, its notification columns NULL.
    rows = [_with_sender(n) for n in rows if n.id is not None]
    if page != JOURNAL:
        return state._replace(payloads=[notification_payload(n) for n in rows])
    return state._replace(changes=_merge_changes(key, since, limit, rows, gone_top=first.inbox_gone_top))


def _state(state) -> Snapshot:
    """The snapshot of the state columns (in ``_snapshot_sql``'s order), with empty pages."""
    found, version, unread, newest, floor, rows_top, gone_top = state
    floor = floor or 0
    return Snapshot(
        user_found=bool(found),
        token_version=version or 0,
        unread=unread,
        newest=newest or 0,
        floor=floor,
        top=max(floor, rows_top or 0, gone_top or 0),  # journal.position's
        payloads=[],
        changes=[],
    )


def _with_sender(n: Notification) -> Notification:
    """The row with its sender as ``select_related`` gives it, only the key and username loaded (what a payload reads)."""
    if n.sender_id is not None:
        User = get_user_model()
        pk, username, names = _sender_fields(settings.AUTH_USER_MODEL)
        loaded = {username: n.inbox_sender_username, pk: n.sender_id}  # one entry when the username is the key
        n.sender = User.from_db(n._state.db, names, [loaded[name] for name in names])
    return n


def _merge_changes(key, since: int, limit: int, rows: list[Notification], *, gone_top) -> list[Change]:
    """``journal.changes``' page from its rows, read by the snapshot, and its tombstones: asked only if there are any after ``since``."""
    merged = [Change(n.seq, n.id, notification=n) for n in rows]
    if gone_top is not None and gone_top > since:
        with connection.cursor() as cursor:
            cursor.execute(_tombstones_sql(connection.vendor), [key, since, limit])
            merged += [Change(s, i, reason=r) for s, i, r in cursor.fetchall()]
        merged.sort(key=lambda c: (c.seq, c.id))
    return merged[:limit]


# --- The statements, built once per process (and per user model, database and setting) --------------


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _column(model, name: str) -> str:
    return _quote(model._meta.get_field(name).column)


@functools.cache
def _sender_fields(user_model: str) -> tuple[str, str, list[str]]:
    """The key's and the username's attnames, and both in the order of the model's fields (``Model.from_db``'s)."""
    User = get_user_model()
    pk, username = User._meta.pk.attname, User._meta.get_field(User.USERNAME_FIELD).attname
    return pk, username, [f.attname for f in User._meta.concrete_fields if f.attname in (pk, username)]


@functools.cache
def _tombstones_sql(vendor: str) -> str:
    t = Tombstone
    seq, nid = _column(t, "seq"), _column(t, "notification_id")
    return (
        f"SELECT {seq}, {nid}, {_column(t, 'reason')} FROM {_quote(t._meta.db_table)} WHERE {_column(t, 'user')} = %s"
        f" AND {seq} > %s ORDER BY {seq}, {nid} LIMIT %s"
    )


@functools.cache
def _token_user_sql(user_model: str, vendor: str, id_field: str, check_active: bool) -> str:
    User = get_user_model()
    columns = ", ".join(f"u.{_quote(f.column)}" for f in User._meta.concrete_fields)
    pk = f"u.{_quote(User._meta.pk.column)}"
    version = (
        f"SELECT v.{_column(TokenVersion, 'version')} FROM {_quote(TokenVersion._meta.db_table)} v"
        f" WHERE v.{_column(TokenVersion, 'user')} = {pk}"
    )
    active = f" AND u.{_column(User, 'is_active')}" if check_active else ""
    return (
        f"SELECT {columns}, COALESCE(({version}), 0) AS inbox_token_version FROM {_quote(User._meta.db_table)} u"
        f" WHERE u.{_column(User, id_field)} = %s{active} ORDER BY {pk} LIMIT 1"
    )


@functools.cache
def _snapshot_sql(user_model: str, vendor: str, check_active: bool, page: str) -> str:
    User, n = get_user_model(), Notification
    table, recipient, nid, seq = _quote(n._meta.db_table), _column(n, "recipient"), _column(n, "id"), _column(n, "seq")
    unexpired = f"({_column(n, 'expires_at')} IS NULL OR {_column(n, 'expires_at')} > %s)"
    active = f" AND {_column(User, 'is_active')}" if check_active else ""
    state = (
        f"SELECT (SELECT 1 FROM {_quote(User._meta.db_table)} WHERE {_quote(User._meta.pk.column)} = %s{active}) AS inbox_user_found,"
        f" (SELECT {_column(TokenVersion, 'version')} FROM {_quote(TokenVersion._meta.db_table)}"
        f" WHERE {_column(TokenVersion, 'user')} = %s) AS inbox_token_version,"
        f" ({unread.count_sql(vendor)}) AS inbox_unread,"
        f" (SELECT max({nid}) FROM {table} WHERE {recipient} = %s) AS inbox_newest,"
        f" (SELECT {_column(JournalFloor, 'seq')} FROM {_quote(JournalFloor._meta.db_table)}"
        f" WHERE {_column(JournalFloor, 'user')} = %s) AS inbox_floor,"
        f" (SELECT max({seq}) FROM {table} WHERE {recipient} = %s) AS inbox_rows_top,"
        f" (SELECT max({_column(Tombstone, 'seq')}) FROM {_quote(Tombstone._meta.db_table)}"
        f" WHERE {_column(Tombstone, 'user')} = %s) AS inbox_gone_top"
    )
    if page == NONE:
        return state
    # The order of the parameters: the recipient, then ``after`` (AFTER), the time, then ``since`` (JOURNAL), the limit.
    which, last, order = {
        PENDING: (f" AND {_column(n, 'delivered_at')} IS NULL", "", [nid]),
        AFTER: (f" AND {nid} > %s", "", [nid]),
        JOURNAL: ("", f" AND {seq} > %s", [seq, nid]),
    }[page]
    columns = ", ".join(_quote(f.column) for f in n._meta.concrete_fields)
    row_columns = ", ".join(f"r.{_quote(f.column)}" for f in n._meta.concrete_fields)
    # The sender's username by its key, row by row (as select_related's join would, without a plan that scans the users).
    username = (
        f"SELECT u.{_column(User, User.USERNAME_FIELD)} FROM {_quote(User._meta.db_table)} u"
        f" WHERE u.{_quote(User._meta.pk.column)} = r.{_column(n, 'sender')}"
    )
    return (
        f"SELECT s.*, {row_columns}, ({username}) AS inbox_sender_username FROM ({state}) s"
        f" LEFT JOIN (SELECT {columns} FROM {table} WHERE {recipient} = %s{which} AND {unexpired}{last}"
        f" ORDER BY {', '.join(order)} LIMIT %s) r ON 1 = 1"
        f" ORDER BY {', '.join('r.' + c for c in order)}"
    )
