"""
Retention (issue 21): per-category cutoffs, expired notifications, the journal's tombstones and
floors, the purge command and its schedule on the task worker, live frames for purged rows, and a
purge of a million rows in short batches while sends go on.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from inbox import services
from inbox.delivery import locmem
from inbox.events import NotificationsDeleted
from inbox.models import JournalFloor, Notification, Tombstone
from inbox.retention_settings import check_configuration, parse_retention_days
from inbox.services import retention
from inbox.store import journal
from tests import services as ext

ROOT = Path(__file__).resolve().parents[2]
DAY = timedelta(days=1)
RECORDING = "inbox.delivery.locmem.RecordingBackend"


@pytest.fixture
def inbox_settings(settings):
    """Set INBOX keys for one test: ``inbox_settings(RETENTION_DAYS=30)``; events are recorded (locmem)."""

    def apply(**keys):
        settings.INBOX = {**settings.INBOX, "DELIVERY_BACKENDS": [RECORDING], **keys}

    locmem.outbox.clear()
    apply()
    yield apply
    locmem.outbox.clear()


@pytest.fixture
def purge(django_capture_on_commit_callbacks):
    """One purge round, its after-commit announcements run (the test's transaction never commits)."""

    def run(**kwargs) -> retention.PurgeReport:
        with django_capture_on_commit_callbacks(execute=True):
            return retention.purge(**kwargs)

    return run


def old(user, *, days: float, category: str = "general", read: bool = False, **fields) -> Notification:
    """A notification created ``days`` ago (saved without the signal's push: bulk_create)."""
    created = timezone.now() - timedelta(days=days)
    [n] = Notification.objects.bulk_create(
        [Notification(recipient=user, title=f"{category} {days}d", category=category, created_at=created,
                      read_at=created if read else None, **fields)]
    )
    return n


def deleted_events() -> list[NotificationsDeleted]:
    return [e for e in locmem.outbox if isinstance(e, NotificationsDeleted)]


# --- Settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("", None),
        ("forever", None),
        ("90", 90.0),
        ("0.5", 0.5),
        ("general=30, security=365, *=90", {"general": 30.0, "security": 365.0, "*": 90.0}),
        ("security=forever,*=90", {"security": None, "*": 90.0}),
    ],
)
def test_inbox_retention_days_reads_a_number_or_category_pairs(text, value):
    assert parse_retention_days(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ninety", "'ninety' is not a number of days"),
        ("-3", "'-3' is not a number of days"),
        ("0", "'0' is not a number of days"),
        ("general=30,security", "'security' is not category=days"),
        ("gen eral=30", "'gen eral=30' is not category=days"),
        ("general=30,general=40", "'general' is given twice"),
        ("general=soon", "INBOX_RETENTION_DAYS (general): 'soon' is not a number of days"),
    ],
)
def test_a_bad_inbox_retention_days_is_refused_with_what_is_wrong(text, message):
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_retention_days(text)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"RETENTION_DAYS": "90"}, "'90' is not a number of days"),
        ({"RETENTION_DAYS": {"general": 0}}, r"RETENTION_DAYS\"\]\['general'\]: 0 is not a number of days"),
        ({"RETENTION_DAYS": {"bad category!": 3}}, "'bad category!' is not a category"),
        ({"JOURNAL_RETENTION_DAYS": -1}, "JOURNAL_RETENTION_DAYS"),
        ({"PURGE_BATCH_SIZE": 0}, "PURGE_BATCH_SIZE"),
        ({"PURGE_BATCH_SIZE": 2.5}, "PURGE_BATCH_SIZE"),
        ({"PURGE_EVERY_SECONDS": -60}, "PURGE_EVERY_SECONDS"),
        ({"EXPIRED_GRACE_SECONDS": "soon"}, "EXPIRED_GRACE_SECONDS"),
    ],
)
def test_a_bad_retention_setting_is_an_error_at_start_up(settings, keys, message):
    settings.INBOX = {**settings.INBOX, **keys}
    with pytest.raises(ImproperlyConfigured, match=message):
        check_configuration()


def test_the_service_refuses_to_start_with_a_bad_inbox_retention_days():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "notifications_site.settings", "INBOX_RETENTION_DAYS": "general=30,*=ninety"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ImproperlyConfigured: INBOX_RETENTION_DAYS (*): 'ninety' is not a number of days" in result.stderr


def test_by_default_every_notification_is_kept(db, inbox_settings, purge, alice):
    kept = old(alice, days=3650)
    report = purge()
    assert (report.purged, report.expired) == (0, 0)
    assert Notification.objects.filter(pk=kept.pk).exists()


# --- Per-category cutoffs --------------------------------------------------------------------------


def test_each_category_is_purged_after_its_own_retention_and_the_rest_after_the_default(db, inbox_settings, purge, alice, bob):
    inbox_settings(RETENTION_DAYS={"general": 30, "security": None, "*": 90})
    gone = [old(alice, days=31), old(bob, days=91, category="billing"), old(alice, days=400, category="order", read=True)]
    kept = [
        old(alice, days=29), old(bob, days=89, category="billing"), old(alice, days=5000, category="security"),
        old(bob, days=1),
    ]
    report = purge()

    assert report.purged == 3
    assert set(Notification.objects.values_list("pk", flat=True)) == {n.pk for n in kept}
    tombstones = Tombstone.objects.order_by("notification_id")
    assert [(t.user_id, t.notification_id, t.reason) for t in tombstones] == sorted(
        [(n.recipient_id, n.pk, "expired") for n in gone], key=lambda row: row[1]
    )
    # One event per user per batch, with the user's unread count after the purge (read rows and
    # the ones kept are counted as they are).
    events = {e.user_id: e for e in deleted_events()}
    assert len(deleted_events()) == 2
    assert sorted(events[alice.pk].ids) == sorted(n.pk for n in gone if n.recipient_id == alice.pk)
    assert events[alice.pk].unread == 2  # 29 days (general) and the security one
    assert events[bob.pk].ids == [gone[1].pk] and events[bob.pk].unread == 2


def test_a_purged_notification_takes_its_fallback_records_with_it(db, inbox_settings, purge, alice):
    from inbox.models import FallbackDelivery

    inbox_settings(RETENTION_DAYS=30)
    n = old(alice, days=31)
    FallbackDelivery.objects.create(notification=n, channel="email", status="sent")
    assert purge().purged == 1
    assert not Notification.objects.exists() and not FallbackDelivery.objects.exists()


def test_a_single_number_applies_to_every_category(db, inbox_settings, purge, alice):
    inbox_settings(RETENTION_DAYS=7)
    gone = [old(alice, days=8, category=c) for c in ("general", "security", "order")]
    kept = old(alice, days=6, category="security")
    assert purge().purged == 3
    assert list(Notification.objects.values_list("pk", flat=True)) == [kept.pk]
    assert sorted(deleted_events()[0].ids) == sorted(n.pk for n in gone)


def test_batches_take_the_oldest_first_and_each_commits_on_its_own(db, inbox_settings, purge, alice, bob):
    inbox_settings(RETENTION_DAYS=10, PURGE_BATCH_SIZE=2)
    rows = [old(alice if i % 2 else bob, days=100 - i) for i in range(5)]  # oldest first
    old(alice, days=1)
    seen: list[tuple[str, int]] = []
    report = purge(on_batch=lambda kind, n, seconds: seen.append((kind, n)))
    assert seen == [("retention", 2), ("retention", 2), ("retention", 1)]
    assert report.batches == 3 and report.purged == 5
    # Each batch announced its own rows, oldest first.
    assert [sorted(e.ids) for e in deleted_events()][:2] in (
        [[rows[0].pk], [rows[1].pk]], [[rows[1].pk], [rows[0].pk]],
    )


def test_purged_rows_take_the_users_next_journal_number(db, inbox_settings, purge, alice):
    inbox_settings(RETENTION_DAYS=10)
    n = old(alice, days=20)
    before = journal.advance  # the number the next change would take
    from django.db import transaction

    with transaction.atomic():
        expected = before([alice.pk])[alice.pk]
    purge()
    [t] = Tombstone.objects.filter(notification_id=n.pk)
    assert t.seq >= expected
    with transaction.atomic():
        assert journal.advance([alice.pk])[alice.pk] > t.seq


# --- Expired notifications -----------------------------------------------------------------------


def test_expired_notifications_are_deleted_and_their_tabs_told_after_the_grace(db, inbox_settings, purge, alice):
    inbox_settings(EXPIRED_GRACE_SECONDS=60)
    now = timezone.now()
    expired = old(alice, days=0, expires_at=now - timedelta(minutes=5))
    in_grace = old(alice, days=0, expires_at=now - timedelta(seconds=10))
    later = old(alice, days=0, expires_at=now + timedelta(hours=1))
    forever = old(alice, days=0)

    report = purge()

    assert report.expired == 1 and report.purged == 0
    assert set(Notification.objects.values_list("pk", flat=True)) == {in_grace.pk, later.pk, forever.pk}
    [event] = deleted_events()
    assert (event.user_id, list(event.ids), event.unread) == (alice.pk, [expired.pk], 2)  # in_grace is hidden already
    assert Tombstone.objects.get(notification_id=expired.pk).reason == Tombstone.Reason.EXPIRED


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plan")
def test_the_expiry_sweep_uses_its_partial_index(db, inbox_settings, alice, bob):
    insert_old_rows([alice.pk, bob.pk], 20_000)  # none expires ...
    Notification.objects.filter(pk__in=Notification.objects.values("pk")[:10]).update(expires_at=timezone.now() - DAY)  # ... but 10
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Notification._meta.db_table}")
    plan = Notification.objects.filter(retention.expired_filter(timezone.now())).order_by("expires_at", "id")[:1000].explain()
    assert "inbox_expiry" in plan, plan


# --- Tombstones and floors -------------------------------------------------------------------------


def test_the_tombstone_purge_raises_each_users_floor_to_the_highest_purged_number(db, inbox_settings, purge, alice, bob):
    inbox_settings(JOURNAL_RETENTION_DAYS=30)
    now = timezone.now()
    stones = [
        Tombstone(user=alice, notification_id=1, seq=5, created_at=now - 40 * DAY),
        Tombstone(user=alice, notification_id=2, seq=9, created_at=now - 35 * DAY),
        Tombstone(user=alice, notification_id=3, seq=12, created_at=now - 2 * DAY),
        Tombstone(user=bob, notification_id=4, seq=3, created_at=now - 31 * DAY),
    ]
    Tombstone.objects.bulk_create(stones)
    JournalFloor.objects.create(user=bob, seq=7)  # a floor already higher stays where it is

    report = purge()

    assert report.tombstones == 3
    assert list(Tombstone.objects.values_list("notification_id", flat=True)) == [3]
    assert dict(JournalFloor.objects.values_list("user_id", "seq")) == {alice.pk: 9, bob.pk: 7}


def test_tombstones_are_kept_forever_when_the_journal_retention_is_none(db, inbox_settings, purge, alice):
    inbox_settings(JOURNAL_RETENTION_DAYS=None)
    Tombstone.objects.create(user=alice, notification_id=1, seq=1, created_at=timezone.now() - 3650 * DAY)
    assert purge().tombstones == 0
    assert Tombstone.objects.count() == 1 and not JournalFloor.objects.exists()


# --- The command -------------------------------------------------------------------------------------


def test_inbox_purge_dry_run_counts_and_deletes_nothing(db, inbox_settings, alice):
    inbox_settings(RETENTION_DAYS={"general": 30, "*": None}, JOURNAL_RETENTION_DAYS=30)
    for days in (31, 40, 50):
        old(alice, days=days)
    old(alice, days=0, expires_at=timezone.now() - timedelta(hours=1))
    Tombstone.objects.create(user=alice, notification_id=99, seq=1, created_at=timezone.now() - 31 * DAY)
    out = StringIO()

    call_command("inbox_purge", "--dry-run", stdout=out)

    assert "Would purge 1 expired and 3 past retention notification(s), 1 tombstone(s)" in out.getvalue()
    assert Notification.objects.count() == 4 and Tombstone.objects.count() == 1 and not locmem.outbox


def test_inbox_purge_purges_in_batches_and_says_how_long_each_took(db, inbox_settings, alice):
    inbox_settings(RETENTION_DAYS=30)
    for days in range(31, 36):
        old(alice, days=days)
    out = StringIO()
    call_command("inbox_purge", "--batch-size", "2", stdout=out)
    text = out.getvalue()
    assert "Purged 0 expired and 5 past retention notification(s), 0 tombstone(s); 0 journal floor(s) raised" in text
    assert "3 batch(es) of up to 2 rows: median" in text
    assert not Notification.objects.exists()


def test_inbox_purge_refuses_a_bad_batch_size(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--batch-size"):
        call_command("inbox_purge", "--batch-size", "0")


# --- The schedule on the task worker ----------------------------------------------------------------


@pytest.fixture
def task_queue(settings, inbox_settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}  # django-tasks resets on the change


def waiting_runs():
    from django_tasks_db.models import DBTaskResult

    return list(DBTaskResult.objects.filter(task_path=retention.purge_task.module_path, status="READY"))


def test_two_workers_starting_at_once_leave_exactly_one_purge_run_waiting(transactional_db, task_queue):
    barrier, results, errors = threading.Barrier(4), [], []

    def start_worker():
        try:
            barrier.wait()
            results.append(retention.ensure_scheduled())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start_worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(results) == [False, False, False, True]
    assert len(waiting_runs()) == 1
    assert retention.ensure_scheduled() is False  # a worker restarted later changes nothing


def test_a_purge_run_schedules_the_next_one_every_purge_every_seconds(transactional_db, task_queue, inbox_settings, alice):
    inbox_settings(RETENTION_DAYS=30, PURGE_EVERY_SECONDS=3600)
    old(alice, days=40)
    from django_tasks_db.models import DBTaskResult

    assert retention.ensure_scheduled()
    [first] = waiting_runs()
    DBTaskResult.objects.filter(pk=first.pk).update(status="RUNNING")  # the worker claimed it
    started = timezone.now()
    result = retention.purge_task.call()
    assert result["purged"] == 1
    [after] = waiting_runs()
    assert after.pk != first.pk
    assert started + timedelta(seconds=3590) < after.run_after < timezone.now() + timedelta(seconds=3610)


def test_no_periodic_run_is_scheduled_when_purge_every_seconds_is_zero(transactional_db, task_queue, inbox_settings):
    inbox_settings(PURGE_EVERY_SECONDS=0)
    assert retention.ensure_scheduled() is False
    assert waiting_runs() == []


@pytest.mark.e2e
def test_the_real_worker_schedules_the_purge_at_start_and_runs_it(transactional_db, task_queue, alice, tmp_path):
    gone, kept = old(alice, days=40), old(alice, days=10)
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "notifications_site.settings", "DJANGO_DEBUG": "1",
        "DATABASE_URL": ext.database_url_for_subprocess(), "INBOX_RETENTION_DAYS": "30",
        "INBOX_PURGE_EVERY_SECONDS": "3600", "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "inbox_worker", "--interval", "0.2", "--no-startup-delay"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while Notification.objects.filter(pk=gone.pk).exists():
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(20)
    assert Notification.objects.filter(pk=kept.pk).exists()
    assert Tombstone.objects.filter(notification_id=gone.pk, reason="expired").exists()
    [next_run] = waiting_runs()  # the round scheduled the next one, an hour on
    assert next_run.run_after > timezone.now() + timedelta(minutes=59)


# --- Open sockets hear of purged rows --------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_an_open_socket_receives_notification_deleted_for_purged_rows(settings, redis_channel_layer, alice, token_for):
    from realtime import publisher
    from tests.realtime.conftest import ORIGIN, WS_PATH, Socket, build_application

    settings.INBOX = {**settings.INBOX, "RETENTION_DAYS": {"general": 30, "*": None}}
    gone = await database_sync_to_async(old)(alice, days=45)
    kept = await database_sync_to_async(old)(alice, days=45, category="security")
    sock = Socket(build_application(), f"{WS_PATH}?token={token_for(alice)}", headers=[(b"origin", ORIGIN)])
    try:
        connected, _ = await sock.connect(timeout=3)
        assert connected
        while (await sock.receive_json_from(3))["type"] != "sync.done":
            pass
        report = await database_sync_to_async(retention.purge)()
        assert report.purged == 1
        frame = await sock.receive_json_from(3)
        assert frame["type"] == "notification.deleted"
        assert (frame["ids"], frame["unread"]) == ([gone.pk], 1)
        assert await sock.receive_nothing(0.3)
        assert await database_sync_to_async(Notification.objects.filter(pk=kept.pk).exists)()
    finally:
        await sock.disconnect(timeout=1)
        publisher.unbind_loop()
        await database_sync_to_async(connections.close_all)()


# --- A million rows while sends go on ----------------------------------------------------------------

MILLION = int(os.environ.get("INBOX_PURGE_TEST_ROWS", "1000000"))
# Distinct users per batch is what a batch costs (their journal locks, unread counts, events, and the
# index pages their rows sit on): 1M rows of 100 users, round robin, puts 100 users in each batch.
USERS = int(os.environ.get("INBOX_PURGE_TEST_USERS", "100"))


def insert_old_rows(user_ids: list[int], rows: int) -> None:
    """``rows`` notifications 100 to ~112 days old, ids in time order, round-robin over the users, 9 in 10 read: one statement."""
    table = Notification._meta.db_table
    base = timezone.now() - timedelta(days=100)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} (recipient_id, category, title, message, data, link, created_at, read_at)"
                " SELECT (%s::bigint[])[1 + g %% %s], CASE WHEN g %% 7 = 0 THEN 'order' ELSE 'general' END,"
                " 'Old news ' || g, '', '{}'::jsonb, '', %s - (%s - g) * interval '1 second',"
                " CASE WHEN g %% 10 = 0 THEN NULL ELSE %s - (%s - g) * interval '1 second' END"
                " FROM generate_series(1, %s) AS g",
                ["{" + ",".join(map(str, user_ids)) + "}", len(user_ids), base, rows, base, rows, rows],
            )
            cursor.execute(f"ANALYZE {table}")
        else:
            cursor.execute("CREATE TEMP TABLE retention_users (i INTEGER PRIMARY KEY, id INTEGER)")
            cursor.executemany("INSERT INTO retention_users VALUES (%s, %s)", list(enumerate(user_ids)))
            stamp = base.strftime("%Y-%m-%d %H:%M:%S")
            cursor.execute(
                "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %s)"
                f" INSERT INTO {table} (recipient_id, category, title, message, data, link, created_at, read_at, key, \"group\", actions, seq)"
                " SELECT u.id, CASE WHEN n % 7 = 0 THEN 'order' ELSE 'general' END, 'Old news ' || n, '', '{}', '',"
                " strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s, '-' || (%s - n) || ' seconds'),"
                " CASE WHEN n % 10 = 0 THEN NULL ELSE strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s, '-' || (%s - n) || ' seconds') END,"
                " '', '', '[]', 0"
                " FROM g JOIN retention_users AS u ON u.i = n % " + str(len(user_ids)),
                [rows, stamp, rows, stamp, rows],
            )
            cursor.execute("DROP TABLE retention_users")
            cursor.execute("ANALYZE")


class Sender(threading.Thread):
    """Sends through the real service, one after the other, until stopped; records each send's latency."""

    def __init__(self, recipients):
        super().__init__(name="retention-sender", daemon=True)
        self.recipients, self.latencies, self.ids, self.errors = recipients, [], [], []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                [n] = services.notification_create(recipients=[self.recipients[i % len(self.recipients)]], title=f"During the purge {i}")
                self.latencies.append(time.perf_counter() - started)
                self.ids.append(n.pk)
                i += 1
                time.sleep(0.005)
        except Exception as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            connections.close_all()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@pytest.mark.timeout(900)  # a million rows inserted, then purged: minutes on a 2-core machine (docs/feed.md)
@pytest.mark.skipif(not ext.services_required() and not os.environ.get("INBOX_PURGE_TEST_ROWS"),
                    reason="a million rows: runs in CI (CI=true), or with INBOX_PURGE_TEST_ROWS=<rows>")
def test_a_million_rows_are_purged_in_short_batches_while_sends_go_on(transactional_db, settings, capsys):
    settings.INBOX = {**settings.INBOX, "RETENTION_DAYS": {"order": 365, "*": 90}, "PURGE_BATCH_SIZE": 1_000}
    User = get_user_model()
    users = User.objects.bulk_create(User(username=f"reader-{i}", password="!") for i in range(USERS))
    user_ids = [u.pk for u in users]

    started = time.perf_counter()
    insert_old_rows(user_ids, MILLION)
    inserted = time.perf_counter() - started
    orders = Notification.objects.filter(category="order").count()  # kept: 365 days for orders
    assert Notification.objects.count() == MILLION

    plan = Notification.objects.filter(retention.retention_filter(timezone.now())).order_by("created_at", "id")[:1000].explain()
    if connection.vendor == "postgresql":
        assert "Index Scan using inbox_notification_created_at" in plan and "Seq Scan" not in plan, plan

    sender = Sender(users[:50])
    sender.start()
    started = time.perf_counter()
    try:
        report = retention.purge()
    finally:
        sender.stop.set()
        sender.join(30)
    purged_in = time.perf_counter() - started

    assert not sender.errors, sender.errors
    assert report.purged == MILLION - orders
    assert Notification.objects.count() == orders + len(sender.ids)
    assert Notification.objects.filter(pk__in=sender.ids).count() == len(sender.ids) > 0  # every send stored
    assert Tombstone.objects.filter(reason="expired").count() == MILLION - orders
    figures = report.as_dict()
    with capsys.disabled():
        print(
            f"\n[{connection.vendor}] {MILLION:,} rows inserted in {inserted:.1f} s; purged {report.purged:,} in"
            f" {purged_in:.1f} s, {report.batches} batches of 1,000: median {figures['batch_median_ms']} ms,"
            f" max {figures['batch_max_ms']} ms; {len(sender.latencies)} sends during it: median"
            f" {statistics.median(sender.latencies) * 1000:.1f} ms, p99 {percentile(sender.latencies, 0.99) * 1000:.1f} ms,"
            f" max {max(sender.latencies) * 1000:.1f} ms\nplan: {plan}"
        )
    # Short transactions: no batch holds its locks for long, so no send waits long behind one.
    assert max(report.batch_seconds) < 2.0
    assert statistics.median(report.batch_seconds) < 0.5
    assert max(sender.latencies) < 3.0
