"""
Retention: what is old goes, in short batches, and every open tab hears of it.

One purge round (``purge``) does three things, each in batches of ``INBOX["PURGE_BATCH_SIZE"]``
rows, each batch its own transaction (so a purge never holds a lock for long, and sends go on):

1. **Expired**: notifications whose ``expires_at`` passed more than ``EXPIRED_GRACE_SECONDS``
   ago (the partial index ``inbox_expiry``). Reads already hide them; deleting them is how the
   open tabs and the change journal hear of it.
2. **Retention**: notifications older than their category's ``RETENTION_DAYS``, oldest first (the
   ``created_at`` index; one keyset walk per round, so rows a longer rule keeps are passed once).
3. **The journal's tombstones** older than ``JOURNAL_RETENTION_DAYS``: deleted, and each user's
   ``JournalFloor`` raised to the highest purged number (a client resuming from below it is told
   to reset).

A batch of notifications, per user: a tombstone (reason ``expired``) with the user's next journal
number (``journal.advance``, the journal's locks taken first and in order), the rows deleted, and
after commit one ``NotificationsDeleted`` per user with the user's unread count, through the
delivery port (``notification.deleted`` on every open socket). On PostgreSQL the rows are locked
``FOR UPDATE SKIP LOCKED`` after the journal locks: a row another transaction holds (an ack, a
read) is skipped and goes in the next round, so the purge never waits on a row and never
deadlocks with a writer that takes the journal lock first.

The periodic run: ``purge_task`` on the task worker (django-tasks), which first schedules its next
run ``PURGE_EVERY_SECONDS`` later, then purges; ``ensure_scheduled()`` (the worker calls it when it
starts) makes sure exactly one run is waiting, whatever number of workers start at once.
``python manage.py inbox_purge`` runs a round by hand (``--dry-run`` counts only).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.db import connection, transaction
from django.db.models import CASCADE, BigIntegerField, Case, Q, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone
from django_tasks import task

from .. import delivery
from ..conf import inbox_setting
from ..events import NotificationsDeleted
from ..models import JournalFloor, Notification, Tombstone
from ..retention_settings import DEFAULT, retention_rules
from ..store import journal, unread
from ..store.base import integer_user_keys

logger = logging.getLogger(__name__)

#: The one PostgreSQL advisory lock (single-key space) that serializes "is a purge run scheduled?".
SCHEDULE_LOCK = 0x1B0C_0021


@dataclass
class PurgeReport:
    """What one round did (or, with ``dry_run``, would do)."""

    expired: int = 0
    purged: int = 0
    tombstones: int = 0
    floors_raised: int = 0
    batch_seconds: list[float] = field(default_factory=list)  # each batch's transaction, commit included
    announce_seconds: float = 0.0  # handing the batches' events to the delivery backends, after commit
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def batches(self) -> int:
        return len(self.batch_seconds)

    def as_dict(self) -> dict:
        times = self.batch_seconds
        return {
            "expired": self.expired, "purged": self.purged, "tombstones": self.tombstones,
            "floors_raised": self.floors_raised, "batches": self.batches, "seconds": round(self.seconds, 3),
            "batch_max_ms": round(max(times) * 1000, 1) if times else 0.0,
            "batch_median_ms": round(statistics.median(times) * 1000, 1) if times else 0.0,
            "announce_seconds": round(self.announce_seconds, 3),
            "dry_run": self.dry_run,
        }


# --- What goes --------------------------------------------------------------------------------


def retention_filter(now: datetime) -> Q | None:
    """The notifications past their category's retention at ``now``; None when every category is kept."""
    rules = retention_rules(inbox_setting("RETENTION_DAYS"))
    explicit = {c: d for c, d in rules.items() if c != DEFAULT}
    parts = [Q(category=c, created_at__lt=now - timedelta(days=d)) for c, d in sorted(explicit.items()) if d is not None]
    cutoffs = [now - timedelta(days=d) for d in explicit.values() if d is not None]
    if rules.get(DEFAULT) is not None:
        cutoff = now - timedelta(days=rules[DEFAULT])
        parts.append(Q(created_at__lt=cutoff) & ~Q(category__in=sorted(explicit)) if explicit else Q(created_at__lt=cutoff))
        cutoffs.append(cutoff)
    if not parts:
        return None
    combined = parts[0]
    for part in parts[1:]:
        combined |= part
    # The latest cutoff bounds the index range; the categories' rules filter inside it.
    return Q(created_at__lt=max(cutoffs)) & combined


def expired_filter(now: datetime) -> Q:
    grace = timedelta(seconds=float(inbox_setting("EXPIRED_GRACE_SECONDS")))
    return Q(expires_at__isnull=False, expires_at__lte=now - grace)


def tombstone_cutoff(now: datetime) -> datetime | None:
    days = inbox_setting("JOURNAL_RETENTION_DAYS")
    return None if days is None else now - timedelta(days=float(days))


# --- The round ----------------------------------------------------------------------------------


def purge(*, now: datetime | None = None, batch_size: int | None = None, dry_run: bool = False,
          on_batch: Callable[[str, int, float], None] | None = None) -> PurgeReport:
    """
    One purge round: expired notifications, notifications past retention, old tombstones. Each
    batch is its own transaction; ``on_batch(kind, rows, seconds)`` is called after each.
    ``dry_run`` counts what would go and changes nothing.
    """
    now = now or timezone.now()
    batch_size = int(batch_size or inbox_setting("PURGE_BATCH_SIZE"))
    report = PurgeReport(dry_run=dry_run)
    started = time.perf_counter()
    retention, cutoff = retention_filter(now), tombstone_cutoff(now)
    if connection.vendor == "sqlite" and not dry_run:
        # A batch touches pages all over the table's indexes (its rows belong to many users): a
        # page cache of 64 MiB for this connection, not SQLite's 2 MiB, keeps them in memory.
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size = -65536")
    if dry_run:
        report.expired = Notification.objects.filter(expired_filter(now)).count()
        report.purged = Notification.objects.filter(retention).exclude(expired_filter(now)).count() if retention else 0
        report.tombstones = Tombstone.objects.filter(created_at__lt=cutoff).count() if cutoff else 0
    else:
        report.expired = _purge_notifications(expired_filter(now), "expires_at", batch_size, report, "expired", on_batch)
        if retention is not None:
            report.purged = _purge_notifications(retention, "created_at", batch_size, report, "retention", on_batch)
        if cutoff is not None:
            _purge_tombstones(cutoff, batch_size, report, on_batch)
    report.seconds = time.perf_counter() - started
    if report.expired or report.purged or report.tombstones:
        logger.info("retention: %s", report.as_dict())
    return report


def _purge_notifications(where: Q, order: str, batch_size: int, report: PurgeReport, kind: str, on_batch) -> int:
    """Delete the rows ``where`` selects, ``order`` oldest first, ``batch_size`` per transaction; returns how many."""
    total, after = 0, None
    while True:
        started = time.perf_counter()
        with transaction.atomic():
            qs = Notification.objects.filter(where)
            if after is not None:  # keyset: on from the last row seen, so rows kept or skipped are passed once
                qs = qs.filter(**{f"{order}__gte": after[0]}).exclude(**{order: after[0], "id__lte": after[1]})
            rows = list(qs.order_by(order, "id").values_list("id", "recipient_id", order)[:batch_size])
            if not rows:
                break
            after = (rows[-1][2], rows[-1][0])
            deleted, batch = _delete_batch(where, rows)
        elapsed = time.perf_counter() - started
        report.batch_seconds.append(elapsed)
        # Announced once committed (at once, or when the caller's own transaction commits), one
        # delivery for the batch's users; outside the timed transaction, which holds no lock meanwhile.
        announcing = time.perf_counter()
        transaction.on_commit(partial(delivery.deliver, _deleted_events(batch)), robust=True)
        report.announce_seconds += time.perf_counter() - announcing
        total += deleted
        if on_batch is not None:
            on_batch(kind, deleted, elapsed)
    return total


def _delete_batch(where: Q, rows: list[tuple]) -> tuple[int, list[tuple[int, list[int], int]]]:
    """Inside the batch's transaction: tombstone and delete these rows (those still there and free); (user, ids, seq) of each user."""
    users = sorted({user for _, user, _ in rows})
    # The users' journal locks (a send's advisory buckets on PostgreSQL), in order, before any row lock.
    seqs = journal.advance(users)
    ids = [pk for pk, _, _ in rows]
    if connection.features.has_select_for_update_skip_locked:
        # Rows another transaction holds are left for the next round: never wait on a row.
        free = Notification.objects.filter(where, pk__in=ids).select_for_update(skip_locked=True)
        ids = list(free.values_list("id", flat=True))
    by_user: dict[int, list[int]] = {}
    owner = {pk: user for pk, user, _ in rows}
    for pk in sorted(ids):
        by_user.setdefault(owner[pk], []).append(pk)
    if not by_user:
        return 0, []
    _bury_rows([(owner[pk], pk, seqs[owner[pk]]) for pk in sorted(ids)], Tombstone.Reason.EXPIRED)
    _delete_rows(ids)
    return len(ids), [(user, pks, seqs[user]) for user, pks in by_user.items()]


def _deleted_events(batch: list[tuple[int, list[int], int]]) -> list[NotificationsDeleted]:
    """
    The batch's events, with each user's unread count read after the commit: a read that holds no
    lock, as fresh as the frames of any send that committed meanwhile.
    """
    if not batch:
        return []
    counts = unread.counts([user for user, _, _ in batch])
    return [
        NotificationsDeleted(user_id=user, ids=pks, unread=counts.get(user, 0), seq=seq, reason=Tombstone.Reason.EXPIRED)
        for user, pks, seq in batch
    ]


def _int_array(values) -> str:
    """A ``bigint[]`` in its text form: psycopg adapts a list element by element, in Python."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


def _bury_rows(entries: list[tuple[int, int, int]], reason: str) -> None:
    """
    The tombstones (user, notification id, journal number) of ``journal.bury``, for many users in one
    statement: the ORM's ``bulk_create`` prepares each field of each row in Python (~40 ms for 1,000).
    """
    if not integer_user_keys():
        Tombstone.objects.bulk_create(Tombstone(user_id=u, notification_id=n, seq=s, reason=reason) for u, n, s in entries)
        return
    table = connection.ops.quote_name(Tombstone._meta.db_table)
    now = timezone.now()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} (user_id, notification_id, seq, reason, created_at)"
                " SELECT u, n, s, %s, %s FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS e(u, n, s)",
                [reason, now, *(_int_array(column) for column in zip(*entries))],
            )
        else:
            created = connection.ops.adapt_datetimefield_value(now)
            cursor.executemany(
                f"INSERT INTO {table} (user_id, notification_id, seq, reason, created_at) VALUES (%s, %s, %s, %s, %s)",
                [(u, n, s, reason, created) for u, n, s in entries],
            )


def _delete_rows(ids: list[int]) -> None:
    """
    Delete these notifications: the rows pointing at them first (fallback deliveries: each model's
    own fast delete), then the notifications in one statement. The ORM's ``delete()`` would load
    every row as a model instance to collect them (~50 ms for 1,000).
    """
    # The relations Django's deletion collector follows (``related_name="+"`` ones included).
    relations = [
        f for f in Notification._meta.get_fields(include_hidden=True)
        if f.auto_created and not f.concrete and (f.one_to_one or f.one_to_many)
    ]
    if any(relation.on_delete is not CASCADE for relation in relations):  # not met today: let the ORM apply that rule
        Notification.objects.filter(pk__in=ids).delete()
        return
    for relation in relations:
        relation.related_model._base_manager.filter(**{f"{relation.field.name}__in": ids}).delete()
    table = connection.ops.quote_name(Notification._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"DELETE FROM {table} WHERE id = ANY(%s::bigint[])", [_int_array(ids)])
        else:
            for chunk in range(0, len(ids), 10_000):  # well under SQLite's variable limit
                part = ids[chunk : chunk + 10_000]
                cursor.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(part))})", part)


def _purge_tombstones(cutoff: datetime, batch_size: int, report: PurgeReport, on_batch) -> None:
    """Delete tombstones created before ``cutoff``, oldest first, and raise their users' floors."""
    while True:
        started = time.perf_counter()
        with transaction.atomic():
            qs = Tombstone.objects.filter(created_at__lt=cutoff).order_by("created_at", "id")
            if connection.features.has_select_for_update_skip_locked:
                qs = qs.select_for_update(skip_locked=True)
            rows = list(qs.values_list("id", "user_id", "seq")[:batch_size])
            if not rows:
                break
            floors: dict[int, int] = {}
            for _, user, seq in rows:
                floors[user] = max(seq, floors.get(user, 0))
            Tombstone.objects.filter(pk__in=[pk for pk, _, _ in rows]).delete()
            # Raise, never lower: two rounds at once each leave the greater floor.
            JournalFloor.objects.bulk_create((JournalFloor(user_id=u, seq=0) for u in floors), ignore_conflicts=True)
            raised = JournalFloor.objects.filter(user_id__in=list(floors)).update(
                seq=Greatest("seq", Case(*(When(user_id=u, then=Value(s)) for u, s in floors.items()), output_field=BigIntegerField()))
            )
        elapsed = time.perf_counter() - started
        report.batch_seconds.append(elapsed)
        report.tombstones += len(rows)
        report.floors_raised += raised
        if on_batch is not None:
            on_batch("tombstones", len(rows), elapsed)


# --- The schedule (django-tasks) ------------------------------------------------------------------


def _backend():
    from django_tasks import task_backends

    return task_backends[inbox_setting("PURGE_TASK_BACKEND")]


def _schedulable() -> bool:
    """A periodic run needs an interval and a durable backend (an immediate one would run it forever)."""
    from django_tasks_db import DatabaseBackend

    return float(inbox_setting("PURGE_EVERY_SECONDS")) > 0 and isinstance(_backend(), DatabaseBackend)


def _schedule(run_after: datetime) -> bool:
    """Enqueue a purge run at ``run_after`` unless one is waiting already; True if this call enqueued it."""
    from django_tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult
    from django_tasks_db.utils import exclusive_transaction

    alias = inbox_setting("PURGE_TASK_BACKEND")
    with exclusive_transaction():  # SQLite: the write lock from BEGIN; PostgreSQL: the lock below
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEDULE_LOCK])
        waiting = DBTaskResult.objects.filter(
            task_path=purge_task.module_path, backend_name=alias, status=TaskResultStatus.READY
        ).exists()
        if not waiting:
            purge_task.using(backend=alias, run_after=run_after).enqueue()
    return not waiting


def ensure_scheduled() -> bool:
    """
    Make sure exactly one purge run is waiting (the worker calls it when it starts): enqueues one
    to run now if none is. Safe when several workers start at once. True if it enqueued one.
    """
    if not _schedulable():
        logger.info("retention: no periodic purge (PURGE_EVERY_SECONDS is 0 or the task backend is not django-tasks-db's)")
        return False
    return _schedule(timezone.now())


@task()
def purge_task() -> dict:
    """One purge round on the task worker; the next run is scheduled first, so a crash skips no round."""
    if _schedulable():
        _schedule(timezone.now() + timedelta(seconds=float(inbox_setting("PURGE_EVERY_SECONDS"))))
    return purge().as_dict()
