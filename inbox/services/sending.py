"""
Sending: store one notification per recipient and announce it after commit (inbox.delivery).
"""

from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from django.contrib.auth import get_user_model
from django.db import DatabaseError, DataError, connection, transaction
from django.db.models.base import ModelState
from django.utils import timezone

from .. import delivery
from ..conf import inbox_setting
from ..events import NotificationsSaved, NotificationsSent
from ..exceptions import UnknownRecipients
from ..group_commit import RETRY_ALONE, GroupCommit
from ..models import Notification
from ..selectors import bigint_array, notification_unread_count, notification_unread_counts

# Lock space for "one recipient's inserts commit in id order" (PostgreSQL advisory locks).
_LOCK_NAMESPACE = 0x1B0C
_LOCK_BUCKETS = 1024
# What inbox_notification_insert raises when a recipient is not an active user (migrations 0002 and 0003).
INACTIVE_RECIPIENTS_SQLSTATE = "IB001"


def _lock_buckets(recipient_ids: Sequence[int]) -> list[int]:
    """
    The advisory lock buckets a PostgreSQL send takes (inbox_notification_insert, migrations 0002 and 0003).
    They serialize inserts per recipient until commit, so that for one recipient ids are allocated
    in commit order and "after id N" never skips a row committed late. Recipients share 1,024
    buckets (bounded lock count for bulk sends); buckets are taken in ascending order, so two bulk
    sends cannot deadlock. SQLite needs nothing: an IMMEDIATE transaction holds the database write
    lock from BEGIN to COMMIT.
    """
    return sorted({rid % _LOCK_BUCKETS for rid in recipient_ids})


def notification_create(
    *,
    recipients: Sequence,
    title: str,
    message: str = "",
    category: str = "general",
    data: dict[str, Any] | None = None,
    link: str = "",
    expires_at: datetime | None = None,
    sender=None,
) -> list[Notification]:
    """
    Store one notification per recipient in one bulk write and push each to its recipient's
    open clients after commit. Returns the notifications in recipients order.

    Raises UnknownRecipients, and stores nothing, when a recipient is no longer an active user:
    recipients may come from a per-process cache (inbox/directory.py), and the database has the
    last word.
    """
    now = timezone.now()
    data = data if data is not None else {}
    recipient_ids = [u.pk for u in recipients]
    template = _unsaved(
        sender=sender, category=category, title=title, message=message,
        data=data, link=link, created_at=now, expires_at=expires_at,
    )
    if connection.vendor == "postgresql":
        send = _Send(template, recipients, recipient_ids, sender, category, title, message, data, link, now, expires_at)
        # Small sends outside a transaction are written together with those that arrive meanwhile,
        # and pushed by the thread that wrote them, in id order (inbox/group_commit.py).
        written = RETRY_ALONE
        if not connection.in_atomic_block and len(recipient_ids) <= GROUP_COMMIT_MAX_RECIPIENTS and _group_commit:
            written = _group_commit.submit(send)
        if written is RETRY_ALONE:
            # One statement, its own transaction unless the caller has one (see the function).
            written = _insert_and_count_postgresql(send)
            _push_after_commit(template, recipient_ids, *written)
        ids, unread = written
        return [_copy_saved(template, id=nid, recipient_id=rid) for nid, rid in zip(ids, recipient_ids)]
    with transaction.atomic():
        active = set(get_user_model().objects.filter(pk__in=recipient_ids, is_active=True).values_list("pk", flat=True))
        if not active.issuperset(recipient_ids):
            raise UnknownRecipients([u for u in recipients if u.pk not in active])
        rows = [
            Notification(
                recipient_id=rid, sender=sender, category=category, title=title, message=message,
                data=data, link=link, created_at=now, expires_at=expires_at,
            )
            for rid in recipient_ids
        ]
        created = Notification.objects.bulk_create(rows, batch_size=2000)
        unread = notification_unread_counts(user_ids=[n.recipient_id for n in created])
    _push_after_commit(template, recipient_ids, [n.id for n in created], unread)
    return created


def _push_after_commit(template: Notification, recipient_ids: list[int], ids: list[int], unread: dict[int, int]) -> None:
    """
    Push a send's notifications to their recipients' open clients once its rows are committed: at
    once outside a transaction, at the caller's commit inside one (never for a rollback).
    """
    sender = template._state.fields_cache["sender"]
    delivery.publish_on_commit(
        NotificationsSent(
            template=template, ids=ids, recipient_ids=recipient_ids, unread=unread,
            sender_username=sender.username if sender is not None else None,
        )
    )


def _copy(source: Notification, *, fields_cache: dict, saved: bool, **fields) -> Notification:
    """``source`` with ``fields`` changed, without ``Model.__init__``'s walk over every field and its default."""
    obj = Notification.__new__(Notification)
    obj.__dict__.update(source.__dict__)
    obj.__dict__.update(fields)
    obj._state = ModelState()
    if saved:
        obj._state.adding = False
        obj._state.db = source._state.db or "default"
    obj._state.fields_cache = fields_cache
    return obj


_blank: Notification | None = None


def _unsaved(*, sender, **fields) -> Notification:
    """
    ``Notification(sender=sender, **fields)``, given every field with a callable or mutable default
    (``created_at``, ``data``): a copy of a blank one (``Model.__init__`` 14 us in-process; 2.3 % of
    a directed profile, bench/README.md finding 43).
    """
    global _blank
    if _blank is None:
        _blank = Notification()
    return _copy(_blank, fields_cache={"sender": sender}, saved=False, sender_id=sender.pk if sender is not None else None, **fields)


def _copy_saved(template: Notification, **fields) -> Notification:
    """A saved copy of ``template`` with ``fields`` changed (~35 us a row less than Model.__init__)."""
    return _copy(template, fields_cache=dict(template._state.fields_cache), saved=True, **fields)


class _Send(NamedTuple):
    """A send's write on PostgreSQL: its template (for the push) and what its rows are made of."""

    template: Notification
    recipients: Sequence
    recipient_ids: list[int]
    sender: Any
    category: str
    title: str
    message: str
    data: dict
    link: str
    now: datetime
    expires_at: datetime | None


def _insert_and_count_postgresql(send: _Send) -> tuple[list[int], dict[int, int]]:
    """
    The same notification for every recipient, and the recipients' unread counts, in one call of
    ``inbox_notification_insert`` (migrations 0002 and 0003): the recipients' locks, a check that each is
    still an active user (the caller's answer may come from a cache), one INSERT ... SELECT FROM
    unnest() and the counts. One round trip; outside a transaction also the commit. bulk_create
    of 10,000 rows spent ~1 s adapting 110,000 parameters; this passes eleven.

    Returns the new ids in recipients order (the sequence is drawn in that order) and the unread
    counts of the recipients, including the new rows: the count's snapshot is taken after the
    locks, so it sees every committed row but not the rows the same statement inserts.
    Raises UnknownRecipients, with nothing stored, when a recipient is not an active user.
    """
    recipients, recipient_ids, sender = send.recipients, send.recipient_ids, send.sender
    try:
        # In a caller's transaction, a savepoint: a refused send must leave that transaction usable.
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT is_new, recipient, value FROM inbox_notification_insert("
                "%s::bigint[], %s, %s::integer[], %s, %s, %s, %s, %s::jsonb, %s, %s, %s)",
                [
                    bigint_array(recipient_ids), _LOCK_NAMESPACE, bigint_array(_lock_buckets(recipient_ids)),
                    sender.pk if sender is not None else None, send.category, send.title, send.message,
                    orjson.dumps(send.data).decode(), send.link, send.now, send.expires_at,
                ],
            )
            rows = cursor.fetchall()
    except DatabaseError as exc:
        cause = exc.__cause__
        if getattr(cause, "sqlstate", None) != INACTIVE_RECIPIENTS_SQLSTATE:
            raise
        gone = {int(i) for i in (cause.diag.message_detail or "").split(",") if i}
        raise UnknownRecipients([u for u in recipients if u.pk in gone]) from None
    return _ids_and_counts([send], rows)[0]


def _ids_and_counts(sends: Sequence[_Send], rows) -> list[tuple[list[int], dict[int, int]]]:
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
        if s.expires_at is None or s.expires_at > s.now:
            for rid in s.recipient_ids:
                unread[rid] = unread.get(rid, 0) + 1
        written.append((ids, {rid: unread.get(rid, 0) for rid in s.recipient_ids}))
    return written


def _insert_rows_postgresql(sends: Sequence[_Send]) -> list[tuple[list[int], dict[int, int]]]:
    """
    Several sends in one call of ``inbox_notification_insert_rows`` (migration 0005): one statement
    and one transaction for all of them, the same locks, check and counts as
    ``_insert_and_count_postgresql`` gives each. A batch of one too: on its generic plans (migration
    0006) the call costs PostgreSQL about a third less than that one's. Returns each send's new ids
    and its recipients' unread counts, as that does: a later send of the batch counts the earlier
    ones' rows to the same recipient. Raises for the whole batch; a refusal (an inactive recipient, a
    lock waited for longer than the stall time) has each send written alone, by that one
    (_group_commit_error), so a lone send refused so costs a second statement. A lone send that
    gets no connection or whose parameters cannot be built raises that error as it is.
    """
    rows = [(rid, s) for s in sends for rid in s.recipient_ids]
    recipient_ids = [rid for rid, _ in rows]
    try:
        params = [
            bigint_array(recipient_ids), _LOCK_NAMESPACE, bigint_array(_lock_buckets(recipient_ids)),
            [s.sender.pk if s.sender is not None else None for _, s in rows],
            [s.category for _, s in rows], [s.title for _, s in rows], [s.message for _, s in rows],
            [orjson.dumps(s.data).decode() for _, s in rows], [s.link for _, s in rows],
            [s.now for _, s in rows], [s.expires_at for _, s in rows], max(s.now for s in sends),
            f"{max(1, round(inbox_setting('GROUP_COMMIT_STALL_SECONDS') * 1000))}ms",
        ]
        # A connection the pool cannot give (a timeout, PostgreSQL down) fails here, before anything
        # is sent: each send then tries alone, as it would have without the batch.
        connection.ensure_connection()
    except Exception as exc:
        if len(sends) == 1:
            raise  # nothing to try again alone: the send meets its own error
        raise _BatchNotSent(exc) from exc
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT is_new, recipient, value FROM inbox_notification_insert_rows("
            "%s::bigint[], %s, %s::integer[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::jsonb[], "
            "%s::text[], %s::timestamptz[], %s::timestamptz[], %s, %s)",
            params,
        )
        return _ids_and_counts(sends, cursor.fetchall())


def _write_and_push(sends: Sequence[_Send]) -> list[tuple[list[int], dict[int, int]]]:
    """
    Group commit's write: the batch, then each send's push, in the batch's order, which is its
    ids' order (the waiters, woken together, would push in any order, and a client resuming
    "after" the highest id it saw could miss a lower one still on its way).
    """
    written = _insert_rows_postgresql(sends)
    for send, (ids, unread) in zip(sends, written):
        _push_after_commit(send.template, send.recipient_ids, ids, unread)
    return written


class _BatchNotSent(Exception):
    """A batch was not sent: its parameters could not be built (a ``data`` orjson refuses) or no connection was had."""


# SQLSTATEs of a lost or terminated connection: whether the statement committed is unknown.
_CONNECTION_LOST_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _group_commit_error(exc: BaseException):
    """
    What each send of a batch that failed gets (inbox/group_commit.py). The batch was one statement
    and its own transaction: when PostgreSQL refused it (an error with a SQLSTATE: a recipient
    deactivated meanwhile, a value it does not take, a lock it waited for too long) or it was never
    sent, nothing is stored and each send is written alone, to meet its own refusal or none (a batch
    of one that was never sent raised its own error instead: there is nothing to try again). When
    the connection was lost, the commit may have happened with its answer lost: nobody writes
    again, and each send fails as the batch did (a 503), as a send written alone would.
    """
    if isinstance(exc, _BatchNotSent):
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


#: Sends with at most this many recipients, outside a transaction, go through group commit.
GROUP_COMMIT_MAX_RECIPIENTS = 16
_group_commit = (
    GroupCommit(
        _write_and_push, _group_commit_error,
        max_batch=inbox_setting("GROUP_COMMIT_MAX"), stall_seconds=inbox_setting("GROUP_COMMIT_STALL_SECONDS"),
    )
    if inbox_setting("GROUP_COMMIT_MAX") > 1
    else None
)


def notification_push_saved(*, notification: Notification) -> None:
    """Push a notification that was saved one by one (admin, shell, other code) after commit."""
    transaction.on_commit(partial(_push_one, notification.pk), robust=True)


def _push_one(notification_id: int) -> None:
    n = Notification.objects.select_related("sender").filter(pk=notification_id).first()
    if n is None:
        return
    delivery.deliver((NotificationsSaved(notifications=[n], unread={n.recipient_id: notification_unread_count(user_id=n.recipient_id)}),))


def notification_resend(*, notifications: Sequence[Notification]) -> int:
    """Push stored notifications again to their recipients' open clients (admin action)."""
    items = [n for n in notifications if not n.is_expired()]
    unread = notification_unread_counts(user_ids=[n.recipient_id for n in items])
    delivery.publish_on_commit(NotificationsSaved(notifications=items, unread=unread, resend=True))
    return len(items)
