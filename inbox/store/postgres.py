"""
The PostgreSQL path of a send: one call of a PL/pgSQL function (store/sql/) for a send alone, or of
its batch twin for the small sends that group commit writes together (store/group_commit.py).

Both functions take the recipients as ``bigint[]``: they are for a user model keyed by integers
(Django's default). A host whose users are keyed by a UUID or a string writes through the ORM
instead (``insert_any_key``), with the same advisory locks, bucketed by a stable hash of the key.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Collection, Iterable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import orjson
from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed
from django.db import DatabaseError, DataError, connection, transaction
from django.dispatch import receiver

from ..conf import inbox_setting
from . import sqlite
from .base import Announce, InactiveRecipients, NewSend, UserId
from .group_commit import RETRY_ALONE, GroupCommit

#: Lock space for "one recipient's inserts commit in id order" (PostgreSQL advisory locks).
LOCK_NAMESPACE = 0x1B0C
LOCK_BUCKETS = 1024
#: What both functions raise when a recipient is not an active user (DETAIL: their ids; store/sql/).
INACTIVE_RECIPIENTS_SQLSTATE = "IB001"
#: Sends with at most this many recipients, outside a transaction, go through group commit.
GROUP_COMMIT_MAX_RECIPIENTS = 16

#: The one definition of each function (the migrations load these files).
SQL_DIR = Path(__file__).resolve().parent / "sql"
SQL_FILES = {
    "inbox_notification_insert": SQL_DIR / "notification_insert.sql",
    "inbox_notification_insert_rows": SQL_DIR / "notification_insert_rows.sql",
}


def function_sql(name: str) -> str:
    """The ``CREATE OR REPLACE FUNCTION`` of ``name`` from its canonical file, for this project's tables."""
    quote = connection.ops.quote_name
    return SQL_FILES[name].read_text().format(
        users=quote(apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table),
        notifications=quote(apps.get_model("inbox", "Notification")._meta.db_table),
    )


def bigint_array(ids: Iterable[int]) -> str:
    """
    PostgreSQL's text form of an array of integers, for a ``%s::bigint[]`` parameter: psycopg
    adapts a Python list of 10,000 ints element by element, in Python.
    """
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


def lock_buckets(recipient_ids: Sequence[int]) -> list[int]:
    """
    The advisory lock buckets a PostgreSQL send takes (store/sql/). They serialize inserts per
    recipient until commit, so that for one recipient ids are allocated in commit order and "after
    id N" never skips a row committed late. Recipients share 1,024 buckets (bounded lock count for
    bulk sends); buckets are taken in ascending order, so two bulk sends cannot deadlock. SQLite
    needs nothing: an IMMEDIATE transaction holds the database write lock from BEGIN to COMMIT.
    """
    return sorted({rid % LOCK_BUCKETS for rid in recipient_ids})


def key_lock_buckets(recipient_ids: Iterable[UserId]) -> list[int]:
    """
    ``lock_buckets`` for keys that are not integers (UUIDs, strings): the bucket of a key is the
    CRC-32 of its text, the same in every process and after every restart (Python's ``hash`` of a
    string is salted per process), so two processes writing to one recipient take the same lock.
    """
    return sorted({zlib.crc32(str(rid).encode("utf-8", "surrogatepass")) % LOCK_BUCKETS for rid in recipient_ids})


def insert_any_key(send: NewSend, *, announce: Announce) -> tuple[list[int], dict[UserId, int]]:
    """
    The PostgreSQL path for a user model whose key is not an integer: the ORM path (store/sqlite.py)
    in one transaction (a savepoint inside the caller's), after ``_lock_active_recipients`` took the
    recipients' advisory locks and checked them. The guarantees are the functions': for one
    recipient ids commit in order, nothing is stored for an inactive recipient. No group commit:
    each send is its own transaction.
    """
    return sqlite.insert_notifications(send, announce=announce, active_recipients=_lock_active_recipients)


def _lock_active_recipients(recipient_ids: Collection[UserId]) -> set[UserId]:
    """
    Take the recipients' advisory locks (ascending buckets, as the functions do: two bulk sends
    cannot deadlock) and their unread counters, then answer which of them are active users, each
    row held FOR KEY SHARE (it cannot be deleted before this transaction ends), as the functions do.
    """
    from django.contrib.auth import get_user_model

    from . import unread  # not at the top: store/unread.py imports this module

    User = get_user_model()
    quote = connection.ops.quote_name
    table, pk = quote(User._meta.db_table), quote(User._meta.pk.column)
    is_active = quote(User._meta.get_field("is_active").column)
    with connection.cursor() as cursor:
        # One statement per lock, in order, in one pipeline (psycopg's executemany).
        cursor.executemany("SELECT pg_advisory_xact_lock(%s, %s)", [(LOCK_NAMESPACE, b) for b in key_lock_buckets(recipient_ids)])
        keys = [User._meta.pk.get_db_prep_value(rid, connection) for rid in set(recipient_ids)]
        # The unread counters before the user rows, as the functions do (store/sql/unread_counter.sql).
        cursor.execute(f"SELECT inbox_unread_lock(%s::{unread.recipient_type()}[])", [keys])
        cursor.execute(f"SELECT {pk} FROM {table} WHERE {pk} = ANY(%s) AND {is_active} FOR KEY SHARE", [keys])
        return {User._meta.pk.to_python(row[0]) for row in cursor.fetchall()}


def insert_notifications(send: NewSend, *, announce: Announce) -> tuple[list[int], dict[int, int]]:
    """
    The PostgreSQL path of ``inbox.store.insert_notifications``. Small sends outside a transaction
    are written together with those that arrive meanwhile, and announced by the thread that wrote
    them, in id order (store/group_commit.py); the others in one call of their own.
    """
    written = RETRY_ALONE
    if not connection.in_atomic_block and len(send.recipient_ids) <= GROUP_COMMIT_MAX_RECIPIENTS:
        committer = group_commit()
        if committer is not None:
            written = committer.submit(_Pending(send, announce))
    if written is RETRY_ALONE:
        # One statement, its own transaction unless the caller has one (see the function).
        written = insert(send)
        announce(send, *written)
    return written


def insert(send: NewSend) -> tuple[list[int], dict[int, int]]:
    """
    The same notification for every recipient, and the recipients' unread counts, in one call of
    ``inbox_notification_insert`` (store/sql/notification_insert.sql): the recipients' locks, a
    check that each is still an active user (the caller's answer may come from a cache), one
    INSERT ... SELECT FROM unnest() and the counts. One round trip; outside a transaction also the
    commit. bulk_create of 10,000 rows spent ~1 s adapting 110,000 parameters; this passes eleven.

    Returns the new ids in recipients order (the sequence is drawn in that order) and the unread
    counts of the recipients, including the new rows: the count's snapshot is taken after the
    locks, so it sees every committed row but not the rows the same statement inserts.
    Raises InactiveRecipients, with nothing stored, when a recipient is not an active user.
    """
    recipient_ids = send.recipient_ids
    try:
        # In a caller's transaction, a savepoint: a refused send must leave that transaction usable.
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT is_new, recipient, value FROM inbox_notification_insert("
                "%s::bigint[], %s, %s::integer[], %s, %s, %s, %s, %s::jsonb, %s, %s, %s)",
                [
                    bigint_array(recipient_ids), LOCK_NAMESPACE, bigint_array(lock_buckets(recipient_ids)),
                    send.sender_id, send.category, send.title, send.message,
                    orjson.dumps(send.data).decode(), send.link, send.created_at, send.expires_at,
                ],
            )
            rows = cursor.fetchall()
    except DatabaseError as exc:
        cause = exc.__cause__
        if getattr(cause, "sqlstate", None) != INACTIVE_RECIPIENTS_SQLSTATE:
            raise
        raise InactiveRecipients([int(i) for i in (cause.diag.message_detail or "").split(",") if i]) from None
    return _ids_and_counts([send], rows)[0]


def _ids_and_counts(sends: Sequence[NewSend], rows) -> list[tuple[list[int], dict[int, int]]]:
    """
    Each send's new ids and its recipients' unread counts, from the rows of either insert function:
    the new ids, drawn in row order, and each recipient's unread count before the statement. A send
    counts its own rows, and those of the sends before it in the same statement, unless expired.
    """
    new_ids = iter(sorted(value for new, _, value in rows if new))
    unread = {rid: value for new, rid, value in rows if not new}
    written = []
    for s in sends:
        ids = [next(new_ids) for _ in s.recipient_ids]
        if s.expires_at is None or s.expires_at > s.created_at:
            for rid in s.recipient_ids:
                unread[rid] = unread.get(rid, 0) + 1
        written.append((ids, {rid: unread.get(rid, 0) for rid in s.recipient_ids}))
    return written


def insert_rows(sends: Sequence[NewSend]) -> list[tuple[list[int], dict[int, int]]]:
    """
    Several sends in one call of ``inbox_notification_insert_rows`` (store/sql/notification_insert_rows.sql):
    one statement and one transaction for all of them, the same locks, check and counts as
    ``insert`` gives each. A batch of one too: on its generic plans the call costs PostgreSQL about
    a third less than that one's. Returns each send's new ids and its recipients' unread counts, as
    that does: a later send of the batch counts the earlier ones' rows to the same recipient.
    Raises for the whole batch; a refusal (an inactive recipient, a lock waited for longer than the
    stall time) has each send written alone, by ``insert`` (``batch_error``), so a lone send refused
    so costs a second statement. A lone send that gets no connection or whose parameters cannot be
    built raises that error as it is; a larger batch raises ``BatchNotSent``.
    """
    rows = [(rid, s) for s in sends for rid in s.recipient_ids]
    recipient_ids = [rid for rid, _ in rows]
    try:
        params = [
            bigint_array(recipient_ids), LOCK_NAMESPACE, bigint_array(lock_buckets(recipient_ids)),
            [s.sender_id for _, s in rows],
            [s.category for _, s in rows], [s.title for _, s in rows], [s.message for _, s in rows],
            [orjson.dumps(s.data).decode() for _, s in rows], [s.link for _, s in rows],
            [s.created_at for _, s in rows], [s.expires_at for _, s in rows], max(s.created_at for s in sends),
            f"{max(1, round(inbox_setting('GROUP_COMMIT_STALL_SECONDS') * 1000))}ms",
        ]
        # A connection the pool cannot give (a timeout, PostgreSQL down) fails here, before anything
        # is sent: each send then tries alone, as it would have without the batch.
        connection.ensure_connection()
    except Exception as exc:
        if len(sends) == 1:
            raise  # nothing to try again alone: the send meets its own error
        raise BatchNotSent(exc) from exc
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT is_new, recipient, value FROM inbox_notification_insert_rows("
            "%s::bigint[], %s, %s::integer[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::jsonb[], "
            "%s::text[], %s::timestamptz[], %s::timestamptz[], %s, %s)",
            params,
        )
        return _ids_and_counts(sends, cursor.fetchall())


class _Pending(NamedTuple):
    """What a send hands group commit: its rows, and whom to tell once they are written."""

    send: NewSend
    announce: Announce


def _write_and_announce(pending: Sequence[_Pending]) -> list[tuple[list[int], dict[int, int]]]:
    """
    Group commit's write: the batch, then each send's announce, in the batch's order, which is its
    ids' order (the waiters, woken together, would announce in any order, and a client resuming
    "after" the highest id it saw could miss a lower one still on its way).
    """
    written = insert_rows([p.send for p in pending])
    for p, (ids, unread) in zip(pending, written):
        p.announce(p.send, ids, unread)
    return written


class BatchNotSent(Exception):
    """A batch was not sent: its parameters could not be built (a ``data`` orjson refuses) or no connection was had."""


# SQLSTATEs of a lost or terminated connection: whether the statement committed is unknown.
_CONNECTION_LOST_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def batch_error(exc: BaseException):
    """
    What each send of a batch that failed gets (store/group_commit.py). The batch was one statement
    and its own transaction: when PostgreSQL refused it (an error with a SQLSTATE: a recipient
    deactivated meanwhile, a value it does not take, a lock it waited for too long) or it was never
    sent, nothing is stored and each send is written alone, to meet its own refusal or none (a batch
    of one that was never sent raised its own error instead: there is nothing to try again). When
    the connection was lost, the commit may have happened with its answer lost: nobody writes
    again, and each send fails as the batch did (a 503), as a send written alone would.
    """
    if isinstance(exc, BatchNotSent):
        return RETRY_ALONE
    sqlstate = getattr(exc.__cause__, "sqlstate", None) or ""
    if isinstance(exc, DatabaseError) and sqlstate and not sqlstate.startswith(_CONNECTION_LOST_SQLSTATES):
        return RETRY_ALONE
    if isinstance(exc, DataError):  # psycopg would not send a value: nothing was sent
        return RETRY_ALONE
    if isinstance(exc, DatabaseError):
        error = type(exc)(*exc.args)
        error.__cause__ = exc.__cause__
        return error
    return RuntimeError(f"the batch this send was written in failed: {exc!r}")


_UNBUILT = object()
_group_commit: GroupCommit | None | object = _UNBUILT
_group_commit_lock = threading.Lock()


def group_commit() -> GroupCommit | None:
    """
    The process's group commit, built from ``INBOX["GROUP_COMMIT_MAX"]`` and
    ``["GROUP_COMMIT_STALL_SECONDS"]`` at first use (again after a settings change); None when
    ``GROUP_COMMIT_MAX`` is 1 or less: every send is written alone.
    """
    global _group_commit
    committer = _group_commit
    if committer is _UNBUILT:
        with _group_commit_lock:
            if _group_commit is _UNBUILT:
                max_batch = inbox_setting("GROUP_COMMIT_MAX")
                _group_commit = (
                    GroupCommit(
                        _write_and_announce, batch_error,
                        max_batch=max_batch, stall_seconds=inbox_setting("GROUP_COMMIT_STALL_SECONDS"),
                    )
                    if max_batch > 1
                    else None
                )
            committer = _group_commit
    return committer


@receiver(setting_changed)
def _forget_group_commit(*, setting, **kwargs) -> None:
    global _group_commit
    if setting == "INBOX":
        with _group_commit_lock:
            _group_commit = _UNBUILT
