"""
``FallbackScheduler``: the delivery backend that turns a send into the fallbacks' durable schedule.

Task rows (django-tasks-db's ``DBTaskResult``) of batches, not of notifications: whatever the writer
accumulated is grouped by channel and delay (``push_delay(category)``, ``email_delay(category)``), and
each group is one row of ``push_fallbacks`` or ``email_fallbacks`` carrying its notification ids (at
most ``MAX_IDS_PER_TASK``), due at the group's latest ``created_at`` plus the delay: nothing runs
before it is due, at most a flush later. A send of 10,000 recipients is ~20 rows in one statement.
The task drops, in one query, what an ack or a read already settled (inbox/fallback/runner.py).

Off the send path: ``deliver`` runs after commit in the thread that wrote the send (on PostgreSQL's
group commit, the writer of the next batch), so by default it only hands the send's ids, category
and time to this process' schedule writer and returns (2-3 µs, whatever the number of recipients);
that thread gathers the sends of ``INBOX["FALLBACK_SCHEDULE_LINGER_SECONDS"]`` (0.25 s) and inserts
them in one statement, so the sends of that quarter second share rows and an INSERT. It reads no preferences (the task does, when it runs).
``INBOX["FALLBACK_SCHEDULE_IN_BACKGROUND"] = False`` inserts in the caller's thread instead (tests,
or a host that wants the insert inside its request). The writer flushes at exit; a process killed
between a commit and the writer's next insert (at most the linger) loses those sends' fallbacks,
never the notifications.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone

from ..conf import inbox_setting
from ..delivery.base import DeliveryBackend
from ..events import Event, NotificationsSaved, NotificationsSent
from . import policy

logger = logging.getLogger(__name__)

_MAX_BUFFERED = 100_000  # sends the writer keeps while the database is unreachable, then drops the oldest
_MAX_GATHERED = 1_000  # sends that end a linger early


def _backend_alias() -> str:
    return inbox_setting("FALLBACK_TASK_BACKEND")


def check_backend() -> None:
    """The schedule is rows: the task backend must be django-tasks-db's (TASKS in the settings)."""
    from django_tasks import task_backends
    from django_tasks_db import DatabaseBackend

    backend = task_backends[_backend_alias()]
    if not isinstance(backend, DatabaseBackend):
        raise ImproperlyConfigured(
            f"The fallbacks need django-tasks-db's DatabaseBackend as the {_backend_alias()!r} task backend "
            f'(TASKS = {{"default": {{"BACKEND": "django_tasks_db.DatabaseBackend"}}}}), not {type(backend).__name__}.'
        )


#: Most notification ids one task row carries, so that one task stays short.
MAX_IDS_PER_TASK = 1000

Entry = tuple[object, Sequence[int], datetime]  # a task, the notification ids of its row, its run_after


def insert_tasks(entries: Sequence[Entry]) -> None:
    """
    Insert READY task rows of django-tasks-db's ``DBTaskResult`` for (task, notification ids,
    run_after), with the values its ``enqueue`` writes (``kwargs={"notification_ids": [...]}``), in
    one statement: on PostgreSQL one INSERT from ``unnest`` of three arrays, on SQLite one
    ``executemany``. The ORM's ``bulk_create`` would prepare each of the 15 fields of each row, where
    only the ids and the time differ.
    """
    from django_tasks_db.models import DBTaskResult

    if not entries:
        return
    names = {f.column for f in DBTaskResult._meta.concrete_fields}
    if names != _COLUMNS:  # the library's table changed: say so rather than write a wrong row
        raise ImproperlyConfigured(f"django-tasks-db's task table has columns {sorted(names)}; inbox/fallback/scheduler.py expects {sorted(_COLUMNS)}")
    table = connection.ops.quote_name(DBTaskResult._meta.db_table)
    columns = (
        "id, status, enqueued_at, started_at, finished_at, args_kwargs, priority, task_path, worker_ids,"
        " queue_name, backend_name, run_after, return_value, exception_class_path, traceback"
    )
    now, alias = timezone.now(), _backend_alias()
    tasks = list(dict.fromkeys(task for task, _, _ in entries))
    arguments = ['{"args": [], "kwargs": {"notification_ids": [%s]}}' % ",".join(str(int(nid)) for nid in ids) for _, ids, _ in entries]
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            index = {task: i + 1 for i, task in enumerate(tasks)}
            cursor.execute(
                f"INSERT INTO {table} ({columns})"
                " SELECT gen_random_uuid(), 'READY', %s, NULL, NULL, u.arguments::jsonb,"
                " (%s::int[])[u.task], (%s::text[])[u.task], '[]'::jsonb, (%s::text[])[u.task], %s, to_timestamp(u.at),"
                " NULL, '', '' FROM unnest(%s::text[], %s::int[], %s::float8[]) AS u(arguments, task, at)",
                [
                    now,
                    [t.priority for t in tasks], [t.module_path for t in tasks], [t.queue_name for t in tasks],
                    alias,
                    arguments,
                    [index[task] for task, _, _ in entries],
                    [at.timestamp() for _, _, at in entries],
                ],
            )
        else:
            adapt = connection.ops.adapt_datetimefield_value
            cursor.executemany(
                f"INSERT INTO {table} ({columns})"
                " VALUES (%s, 'READY', %s, NULL, NULL, %s, %s, %s, '[]', %s, %s, %s, NULL, '', '')",
                [
                    (uuid.uuid4().hex, adapt(now), args, task.priority, task.module_path, task.queue_name, alias, adapt(at))
                    for (task, _, at), args in zip(entries, arguments)
                ],
            )


_COLUMNS = {
    "id", "status", "enqueued_at", "started_at", "finished_at", "args_kwargs", "priority", "task_path",
    "worker_ids", "queue_name", "backend_name", "run_after", "return_value", "exception_class_path", "traceback",
}


Group = tuple[Sequence[int], str, datetime]  # the notification ids of one send, their category, their created_at


def schedule_entries(groups: Iterable[Group]) -> list[Entry]:
    """
    The task rows of ``groups``: per channel and delay, their ids in rows of at most
    ``MAX_IDS_PER_TASK``, each due at the latest ``created_at`` among them plus the delay.
    """
    from .tasks import email_fallbacks, push_fallbacks

    batches: dict[tuple[object, float], tuple[list[int], list[datetime]]] = {}
    for ids, category, created_at in groups:
        for task, delay in ((push_fallbacks, policy.push_delay(category)), (email_fallbacks, policy.email_delay(category))):
            batch_ids, latest = batches.setdefault((task, delay), ([], [created_at]))
            batch_ids.extend(ids)
            latest[0] = max(latest[0], created_at)
    entries = []
    for (task, delay), (ids, (latest,)) in batches.items():
        run_after = latest + timedelta(seconds=delay)
        entries.extend((task, ids[i : i + MAX_IDS_PER_TASK], run_after) for i in range(0, len(ids), MAX_IDS_PER_TASK))
    return entries


class _ScheduleWriter:
    """One thread per process that inserts the schedule of the sends handed to it, everything pending in one go."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._groups: list = []
        self._busy = False
        self._lingering = False  # gathering sends until the linger ends: an add need not wake the thread
        self._hurry = False  # a flush() waits: write what is there now
        self._thread: threading.Thread | None = None

    def add(self, groups: list[Group]) -> None:
        with self._cond:
            self._groups.extend(groups)
            if len(self._groups) > _MAX_BUFFERED:
                dropped = len(self._groups) - _MAX_BUFFERED
                del self._groups[:dropped]
                logger.error("fallback schedule: database unreachable, the fallbacks of %d send(s) dropped", dropped)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="inbox-fallback-schedule", daemon=True)
                self._thread.start()
            if not self._lingering:
                self._cond.notify()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every send handed over is scheduled (True) or ``timeout`` passes (False)."""
        with self._cond:
            self._hurry = True
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._groups and not self._busy, timeout)
            finally:
                self._hurry = False

    def _gather(self) -> list:
        """Wait for a send, then for FALLBACK_SCHEDULE_LINGER_SECONDS more (or a flush): what accumulated."""
        self._cond.wait_for(lambda: self._groups)
        deadline = time.monotonic() + float(inbox_setting("FALLBACK_SCHEDULE_LINGER_SECONDS"))
        self._lingering = True
        try:
            while not self._hurry and len(self._groups) < _MAX_GATHERED and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
        finally:
            self._lingering = False
        groups, self._groups, self._busy = self._groups, [], True
        return groups

    def _run(self) -> None:
        pause = 0.2
        while True:
            with self._cond:
                groups = self._gather()
            try:
                close_old_connections()
                insert_tasks(schedule_entries(groups))
                pause = 0.2
            except Exception as exc:
                # A database outage is expected weather, not a bug: one line, no traceback (the servers'
                # logs stay free of them through a PostgreSQL restart, tests/hardening/).
                log = logger.warning if isinstance(exc, DatabaseError) else logger.exception
                log("fallback schedule: the fallbacks of %d send(s) not inserted yet (%s: %s); trying again in %.1f s",
                    len(groups), type(exc).__name__, str(exc).strip()[:200], pause)
                connection.close()
                with self._cond:
                    self._groups[:0] = groups
                time.sleep(pause)
                pause = min(pause * 2, 10.0)
            finally:
                with self._cond:
                    idle = not self._groups
                if idle:
                    # Hold no connection while idle (a pooled one goes back to the pool).
                    connection.close()
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


writer = _ScheduleWriter()
atexit.register(writer.flush, 5.0)


class FallbackScheduler(DeliveryBackend):
    """Schedules each new notification's Web Push and e-mail fallbacks (inbox/fallback/__init__.py)."""

    def __init__(self) -> None:
        check_backend()

    def deliver(self, events: Sequence[Event]) -> None:
        groups: list[Group] = []
        for event in events:
            if isinstance(event, NotificationsSent):
                groups.append((event.ids, event.template.category, event.template.created_at or timezone.now()))
            elif isinstance(event, NotificationsSaved) and not event.resend:
                groups.extend(([n.pk], n.category, n.created_at) for n in event.notifications)
        if not groups:
            return
        if inbox_setting("FALLBACK_SCHEDULE_IN_BACKGROUND"):
            writer.add(groups)  # the rows are built and inserted in the writer's thread
        else:
            insert_tasks(schedule_entries(groups))
