"""
Users' unread counts (inbox/store/unread.py) against a plain count of the rows, after every kind of
write: sends (alone, in bulk, in group commit's batches, expiring), reads, acks, deletes, updates
in place, rollbacks.

On PostgreSQL the count is a counter per user that statement triggers on the notifications table
keep (inbox/store/sql/unread_counter.sql), plus the unread rows that expire later; there the
counter table itself is also held to the rows it counts (unread rows with no expiry). On SQLite the
rows are counted, so the same tests hold the selectors and the store to the ORM's count.
"""

import threading
import time
from contextlib import nullcontext
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Case, Count, Value, When
from django.utils import timezone
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from inbox import selectors, services
from inbox.exceptions import UnknownRecipients
from inbox.models import Notification
from inbox.services import retention
from inbox.services.sending import notification_send
from inbox.store import NewSend, postgres, unread
from tests.factories import make_notification, make_notifications

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the unread counter and its triggers are PostgreSQL's; SQLite counts the rows"
)

HOUR = timedelta(hours=1)
COUNTERS = "inbox_unread_counter"


# --- What the counts must be ------------------------------------------------------------------


def plain_count(user_id, now=None) -> int:
    """The rows: unread and not expired. What every count must say."""
    return Notification.objects.filter(recipient_id=user_id, read_at__isnull=True).unexpired(now).count()


def counter_table() -> dict:
    """The counter rows that are not zero (a user whose rows all went keeps a row of 0)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT user_id, unread FROM {COUNTERS} WHERE unread <> 0")
        return dict(cursor.fetchall())


def counter_of(user_id):
    """The user's counter row, or None when there is none."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT unread FROM {COUNTERS} WHERE user_id = %s", [user_id])
        row = cursor.fetchone()
    return None if row is None else row[0]


def rows_the_counter_counts() -> dict:
    """Per user, the unread rows that never expire: what the counter table must hold."""
    rows = (
        Notification.objects.filter(read_at__isnull=True, expires_at__isnull=True)
        .order_by().values_list("recipient_id").annotate(n=Count("id"))
    )
    return dict(rows)


def assert_counts_right(*users):
    """Every way of asking for these users' unread counts agrees with the rows (and, on PostgreSQL, the counter table with its rows)."""
    now = timezone.now()
    ids = [u.pk for u in users]
    expected = {uid: plain_count(uid, now) for uid in ids}
    assert {uid: unread.count(uid, now=now) for uid in ids} == expected
    assert unread.counts(ids, now=now) == expected
    # The selectors ask at their own now: the tests' expiries are an hour away from it, never on the edge.
    assert {uid: selectors.notification_unread_count(user_id=uid) for uid in ids} == expected
    assert selectors.notification_unread_counts(user_ids=ids) == expected
    if connection.vendor == "postgresql":
        assert counter_table() == rows_the_counter_counts()
    return expected


def send(recipients, title="T", **fields):
    return services.notification_create(recipients=recipients, title=title, **fields)


@pytest.fixture
def carol(make_user):
    return make_user("carol")


# --- Sends ------------------------------------------------------------------------------------


def test_a_single_send_counts_one_unread_for_its_recipient(alice, bob):
    [n] = send([alice])

    assert assert_counts_right(alice, bob) == {alice.pk: 1, bob.pk: 0}
    if connection.vendor == "postgresql":
        assert (counter_of(alice.pk), counter_of(bob.pk)) == (1, None)
    assert Notification.objects.get(pk=n.pk).read_at is None


def test_a_bulk_send_naming_a_recipient_twice_counts_both_rows_and_pushes_the_counts_it_stored(
    alice, bob, carol, pushed, django_capture_on_commit_callbacks
):
    send([alice], title="before")
    with django_capture_on_commit_callbacks(execute=True):
        send([bob, alice, carol, alice], title="bulk")

    assert assert_counts_right(alice, bob, carol) == {alice.pk: 3, bob.pk: 1, carol.pk: 1}
    # The frames carry each recipient's count including the send's own rows.
    assert {uid: event["unread"] for uid, event in pushed.of_type("notification.created")} == {alice.pk: 3, bob.pk: 1, carol.pk: 1}


def test_a_send_that_expires_later_is_counted_live_and_one_already_expired_is_not_counted(alice):
    now = timezone.now()
    send([alice], title="forever")
    send([alice], title="for an hour", expires_at=now + HOUR)
    send([alice], title="gone", expires_at=now - HOUR)

    assert assert_counts_right(alice) == {alice.pk: 2}
    if connection.vendor == "postgresql":
        assert counter_of(alice.pk) == 1  # only the row that never expires; the other is counted from its row
    # Once its hour has passed the expiring row is counted no more, with no write in between.
    assert unread.count(alice.pk, now=now + 2 * HOUR) == plain_count(alice.pk, now + 2 * HOUR) == 1
    assert unread.counts([alice.pk], now=now + 2 * HOUR) == {alice.pk: 1}


def test_rows_saved_one_by_one_or_bulk_created_through_the_orm_are_counted(alice, bob):
    make_notification(alice)
    make_notifications(bob, 3)
    make_notifications(alice, 2, expires_at=timezone.now() + HOUR)
    make_notifications(alice, 2, read_at=timezone.now())

    assert assert_counts_right(alice, bob) == {alice.pk: 3, bob.pk: 3}


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_group_commit_batch_counts_every_row_of_every_send_in_it(alice, bob):
    send([alice], title="before, outside a transaction: group commit's batch of one")
    now = timezone.now()
    fields = dict(sender_id=None, category="ops", message="", data={}, link="", created_at=now)
    batch = [
        NewSend(recipient_ids=[alice.pk, bob.pk, alice.pk], title="a", expires_at=None, **fields),
        NewSend(recipient_ids=[bob.pk], title="b", expires_at=now + HOUR, **fields),
        NewSend(recipient_ids=[alice.pk], title="c", expires_at=now - HOUR, **fields),
        NewSend(recipient_ids=[bob.pk], title="d", expires_at=None, **fields),
    ]
    written = postgres.insert_rows(batch)

    assert [counts for _, counts in written] == [{alice.pk: 3, bob.pk: 1}, {bob.pk: 2}, {alice.pk: 3}, {bob.pk: 3}]
    assert assert_counts_right(alice, bob) == {alice.pk: 3, bob.pk: 3}
    assert (counter_of(alice.pk), counter_of(bob.pk)) == (3, 2)


# --- Read state -------------------------------------------------------------------------------


def test_marking_read_and_unread_moves_the_count_by_the_rows_that_changed(alice, bob):
    rows = send([alice, alice, alice, bob])
    expiring = send([alice], expires_at=timezone.now() + HOUR)[0]
    a1, a2, _, b1 = rows

    # bob's id among alice's: a user changes only their own rows.
    services.notification_mark_read(user=alice, ids=[a1.pk, a2.pk, expiring.pk, b1.pk])
    assert assert_counts_right(alice, bob) == {alice.pk: 1, bob.pk: 1}
    services.notification_mark_read(user=alice, ids=[a1.pk])  # already read: nothing changes
    assert assert_counts_right(alice, bob) == {alice.pk: 1, bob.pk: 1}
    services.notification_mark_unread(user=alice, ids=[a2.pk, expiring.pk])
    assert assert_counts_right(alice, bob) == {alice.pk: 3, bob.pk: 1}
    if connection.vendor == "postgresql":
        assert counter_of(alice.pk) == 2


def test_marking_everything_read_leaves_nothing_unread_and_by_category_only_that_category(alice, bob):
    send([alice, alice, bob], category="billing")
    send([alice], category="ops")
    send([alice], category="ops", expires_at=timezone.now() + HOUR)
    send([alice], category="ops", expires_at=timezone.now() - HOUR)  # expired: not counted, not read

    services.notification_mark_all_read(user=alice, category="billing")
    assert assert_counts_right(alice, bob) == {alice.pk: 2, bob.pk: 1}
    services.notification_mark_all_read(user=alice)
    assert assert_counts_right(alice, bob) == {alice.pk: 0, bob.pk: 1}
    if connection.vendor == "postgresql":
        assert counter_of(alice.pk) == 0


def test_the_admins_read_and_unread_of_several_users_rows_keep_each_users_count(alice, bob):
    rows = send([alice, bob, alice, bob])
    services.notification_admin_set_read(notifications=rows[:3], read=True)
    assert assert_counts_right(alice, bob) == {alice.pk: 0, bob.pk: 1}
    services.notification_admin_set_read(notifications=rows, read=False)
    assert assert_counts_right(alice, bob) == {alice.pk: 2, bob.pk: 2}


def test_an_ack_sets_delivered_at_only_and_leaves_the_count_and_the_counter_as_they_were(alice):
    rows = send([alice, alice])
    expiring = send([alice], expires_at=timezone.now() + HOUR)[0]
    before = counter_of(alice.pk) if connection.vendor == "postgresql" else None

    acked = services.notification_ack(user=alice, ids=[rows[0].pk, expiring.pk])

    assert acked == sorted([rows[0].pk, expiring.pk])
    assert Notification.objects.filter(delivered_at__isnull=False).count() == 2
    assert assert_counts_right(alice) == {alice.pk: 3}
    if connection.vendor == "postgresql":
        assert counter_of(alice.pk) == before == 2


# --- Deletes ----------------------------------------------------------------------------------


def test_deleting_one_notification_or_many_takes_only_the_unread_ones_off_the_count(alice, bob):
    a1, a2, a3, b1 = send([alice, alice, alice, bob])
    expiring = send([alice], expires_at=timezone.now() + HOUR)[0]
    services.notification_mark_read(user=alice, ids=[a2.pk])

    services.notification_delete(user=alice, ids=[a1.pk])
    assert assert_counts_right(alice, bob) == {alice.pk: 2, bob.pk: 1}
    services.notification_delete(user=alice, ids=[a2.pk, a3.pk, expiring.pk, b1.pk])  # bob's is not alice's to delete
    assert assert_counts_right(alice, bob) == {alice.pk: 0, bob.pk: 1}


def test_the_admins_delete_of_several_users_rows_keeps_each_users_count(alice, bob, carol):
    rows = send([alice, bob, carol, alice, bob])
    assert services.notification_admin_delete(notifications=rows[:4]) == 4
    assert assert_counts_right(alice, bob, carol) == {alice.pk: 0, bob.pk: 1, carol.pk: 0}


def test_the_retention_purge_takes_the_old_and_the_expired_rows_off_the_count(alice, bob, settings, django_capture_on_commit_callbacks):
    settings.INBOX = {**settings.INBOX, "RETENTION_DAYS": 30}
    long_ago = timezone.now() - timedelta(days=40)
    make_notifications(alice, 3, created_at=long_ago)
    make_notifications(alice, 1, created_at=long_ago, read_at=long_ago)
    make_notifications(bob, 2, created_at=long_ago, expires_at=long_ago + HOUR)
    send([alice, bob], title="recent")
    send([bob], title="expired", expires_at=timezone.now() - HOUR)
    assert assert_counts_right(alice, bob) == {alice.pk: 4, bob.pk: 1}

    with django_capture_on_commit_callbacks(execute=True):
        report = retention.purge(batch_size=2)

    assert (report.expired, report.purged) == (3, 4)
    assert list(Notification.objects.values_list("title", flat=True).order_by("recipient_id")) == ["recent", "recent"]
    assert assert_counts_right(alice, bob) == {alice.pk: 1, bob.pk: 1}


def test_deleting_a_user_takes_their_rows_and_count_with_them_and_keeps_the_rows_they_sent(alice, bob):
    send([alice, alice])
    send([alice], expires_at=timezone.now() + HOUR)
    send([bob, bob], sender=alice)  # the sender goes: these rows stay, sender_id set to NULL (an UPDATE)
    alice_id = alice.pk

    alice.delete()

    assert Notification.objects.filter(recipient_id=alice_id).count() == 0
    assert Notification.objects.filter(recipient=bob, sender__isnull=True).count() == 2
    assert unread.count(alice_id) == 0 and unread.counts([alice_id]) == {alice_id: 0}
    assert assert_counts_right(bob) == {bob.pk: 2}
    if connection.vendor == "postgresql":
        assert counter_of(alice_id) in (0, None)


def test_deleting_every_notification_through_the_orm_leaves_nothing_unread(alice, bob):
    send([alice, bob, alice])
    send([bob], expires_at=timezone.now() + HOUR)

    Notification.objects.all().delete()

    assert assert_counts_right(alice, bob) == {alice.pk: 0, bob.pk: 0}
    send([bob])
    assert assert_counts_right(alice, bob) == {alice.pk: 0, bob.pk: 1}


@postgresql_only
def test_on_postgresql_truncating_the_notifications_empties_the_counters_and_counting_starts_again(alice, bob):
    send([alice, bob, alice])
    with connection.cursor() as cursor:
        # The test's own inserts left deferred foreign key checks pending, and TRUNCATE refuses to
        # run over them: run them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"TRUNCATE {connection.ops.quote_name(Notification._meta.db_table)} CASCADE")
        cursor.execute(f"SELECT count(*) FROM {COUNTERS}")
        assert cursor.fetchone()[0] == 0

    assert assert_counts_right(alice, bob) == {alice.pk: 0, bob.pk: 0}
    send([alice])
    assert assert_counts_right(alice, bob) == {alice.pk: 1, bob.pk: 0}


@postgresql_only
def test_on_postgresql_truncating_the_users_table_cascades_to_the_notifications_and_empties_the_counters(alice, bob):
    send([alice, bob])
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"TRUNCATE {connection.ops.quote_name(alice._meta.db_table)} CASCADE")
    assert Notification.objects.count() == 0
    assert counter_table() == {} and counter_of(alice.pk) is None


# --- Updates in place -------------------------------------------------------------------------


def test_a_keyed_send_updating_its_read_row_in_place_makes_it_unread_once_and_not_a_second_row(alice, bob):
    notification_send(recipients=[alice, bob], title="build 1", key="build")
    assert assert_counts_right(alice, bob) == {alice.pk: 1, bob.pk: 1}
    services.notification_mark_all_read(user=alice)
    assert assert_counts_right(alice, bob) == {alice.pk: 0, bob.pk: 1}

    # News again: unread again; bob's row, still unread, is updated and still counted once.
    result = notification_send(recipients=[alice, bob, alice], title="build 2", key="build")
    assert len(result.updated) == 2 and result.created == []
    assert assert_counts_right(alice, bob) == {alice.pk: 1, bob.pk: 1}

    services.notification_mark_all_read(user=alice)
    notification_send(recipients=[alice], title="build 3", key="build", mark_unread=False)
    assert assert_counts_right(alice, bob) == {alice.pk: 0, bob.pk: 1}


def test_a_keyed_send_moving_its_row_to_an_expiry_and_back_counts_it_live_then_in_the_counter(alice):
    notification_send(recipients=[alice], title="deploy", key="deploy")
    notification_send(recipients=[alice], title="deploy", key="deploy", expires_at=timezone.now() + HOUR)
    assert assert_counts_right(alice) == {alice.pk: 1}
    if connection.vendor == "postgresql":
        assert counter_of(alice.pk) == 0
    notification_send(recipients=[alice], title="deploy", key="deploy", expires_at=timezone.now() - HOUR)
    assert assert_counts_right(alice) == {alice.pk: 0}
    notification_send(recipients=[alice], title="deploy", key="deploy")
    assert assert_counts_right(alice) == {alice.pk: 1}
    if connection.vendor == "postgresql":
        assert counter_of(alice.pk) == 1


def test_changing_expires_at_from_none_to_later_to_past_and_back_to_none_keeps_the_count_right(alice):
    [n, _] = send([alice, alice])
    row = Notification.objects.filter(pk=n.pk)

    row.update(expires_at=timezone.now() + HOUR)
    assert assert_counts_right(alice) == {alice.pk: 2}
    if connection.vendor == "postgresql":
        assert counter_of(alice.pk) == 1
    row.update(expires_at=timezone.now() - HOUR)
    assert assert_counts_right(alice) == {alice.pk: 1}
    row.update(expires_at=None)
    assert assert_counts_right(alice) == {alice.pk: 2}
    if connection.vendor == "postgresql":
        assert counter_of(alice.pk) == 2
    # And through save(), the admin's change form.
    saved = Notification.objects.get(pk=n.pk)
    saved.expires_at, saved.read_at = timezone.now() + HOUR, timezone.now()
    saved.save()
    assert assert_counts_right(alice) == {alice.pk: 1}


def test_moving_rows_to_another_recipient_with_an_update_moves_their_unread_count(alice, bob, carol):
    a1, a2, a3, b1 = send([alice, alice, alice, bob])
    expiring = send([alice], expires_at=timezone.now() + HOUR)[0]
    services.notification_mark_read(user=alice, ids=[a3.pk])

    Notification.objects.filter(pk__in=[a1.pk, a3.pk, expiring.pk]).update(recipient=bob)
    assert assert_counts_right(alice, bob, carol) == {alice.pk: 1, bob.pk: 3, carol.pk: 0}
    # One statement that swaps rows between users both ways and reads one of them.
    Notification.objects.filter(pk__in=[a2.pk, b1.pk, a1.pk]).update(
        recipient_id=Case(When(pk=a2.pk, then=Value(bob.pk)), When(pk=b1.pk, then=Value(alice.pk)), default=Value(carol.pk)),
        read_at=Case(When(pk=b1.pk, then=Value(timezone.now())), default=None),
    )
    assert assert_counts_right(alice, bob, carol) == {alice.pk: 0, bob.pk: 2, carol.pk: 1}


# --- Rollbacks --------------------------------------------------------------------------------


class Rollback(Exception):
    pass


def test_a_rolled_back_transaction_leaves_every_count_and_counter_as_it_was(alice, bob):
    rows = send([alice, alice, bob])
    send([bob], expires_at=timezone.now() + HOUR)
    before = assert_counts_right(alice, bob)
    counters = counter_table() if connection.vendor == "postgresql" else None

    with pytest.raises(Rollback), transaction.atomic():
        send([alice, bob, bob])
        services.notification_mark_read(user=alice, ids=[rows[0].pk])
        services.notification_delete(user=bob, ids=[rows[2].pk])
        Notification.objects.filter(pk=rows[1].pk).update(recipient=bob, expires_at=timezone.now() + HOUR)
        assert assert_counts_right(alice, bob) == {alice.pk: 1, bob.pk: 4}
        raise Rollback

    assert assert_counts_right(alice, bob) == before == {alice.pk: 2, bob.pk: 2}
    if connection.vendor == "postgresql":
        assert counter_table() == counters


# --- Repairs and migrations (PostgreSQL) ------------------------------------------------------


@postgresql_only
def test_on_postgresql_the_recount_puts_the_counter_right_after_writes_made_with_the_triggers_off(alice, bob):
    send([alice, bob])
    first = send([alice, alice])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # triggers off, as a replication tool writes
    make_notifications(bob, 3)
    make_notifications(alice, 1, expires_at=timezone.now() + HOUR)
    Notification.objects.filter(pk=first[0].pk).update(read_at=timezone.now())
    Notification.objects.filter(pk=first[1].pk).delete()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = origin")
        # Behind: the writes above were not counted (so the recount below has something to do).
        assert counter_table() == {alice.pk: 3, bob.pk: 1} != rows_the_counter_counts()
        cursor.execute("SELECT inbox_unread_recount()")
        assert cursor.fetchone()[0] == 2  # users with a counter row

    assert assert_counts_right(alice, bob) == {alice.pk: 2, bob.pk: 4}
    send([alice])
    assert assert_counts_right(alice, bob) == {alice.pk: 3, bob.pk: 4}


@postgresql_only
def test_on_postgresql_migrating_back_before_the_counter_and_forward_again_keeps_every_count_right(alice, bob):
    rows = send([alice, alice, bob])
    send([bob], expires_at=timezone.now() + HOUR)
    with connection.cursor() as cursor:
        # Dropping the triggers is an ALTER of the table, refused over the test's pending foreign key checks.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    try:
        call_command("migrate", "inbox", "0017", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", [COUNTERS])
            assert cursor.fetchone()[0] is None
        # Before 0018 the send functions count the rows (inbox_unread() is the plain count).
        send([alice, bob])
        services.notification_mark_read(user=alice, ids=[rows[0].pk])
        Notification.objects.filter(pk=rows[2].pk).delete()
        assert {u: unread.count(u) for u in (alice.pk, bob.pk)} == {alice.pk: 2, bob.pk: 2} == {
            u: plain_count(u) for u in (alice.pk, bob.pk)
        }
    finally:
        call_command("migrate", "inbox", verbosity=0)

    assert assert_counts_right(alice, bob) == {alice.pk: 2, bob.pk: 2}
    assert counter_table() == {alice.pk: 2, bob.pk: 1}
    send([bob])
    assert assert_counts_right(alice, bob) == {alice.pk: 2, bob.pk: 3}


# --- Concurrency (PostgreSQL) -----------------------------------------------------------------


def _in_threads(*jobs):
    """Run each job in a thread of its own (its own connection), started together; re-raise the first error."""
    barrier = threading.Barrier(len(jobs))
    errors = []

    def run(job):
        try:
            barrier.wait(10)
            job()
        except BaseException as exc:  # noqa: BLE001 - the test re-raises it
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_two_threads_sending_to_one_user_at_once_lose_no_unread(alice, bob):
    n = 60

    def sender(title, others):
        def job():
            for i in range(n):
                # Outside a transaction: group commit's batches; every 5th in one of its own, the insert function.
                if i % 5 == 0:
                    with transaction.atomic():
                        send([alice, others], title=f"{title} {i}")
                else:
                    send([alice], title=f"{title} {i}")

        return job

    _in_threads(sender("one", bob), sender("two", alice))

    assert Notification.objects.filter(recipient=alice).count() == 2 * n + n // 5
    assert assert_counts_right(alice, bob) == {alice.pk: 2 * n + n // 5, bob.pk: n // 5}
    assert counter_of(alice.pk) == 2 * n + n // 5


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_writes_racing_on_the_counter_of_a_user_without_one_lose_no_increment_or_decrement(make_user):
    # Plain ORM writes take no send lock: the counter row's own lock is all that orders them, and
    # the first writes to each user race to create its counter row.
    users = [make_user(f"racer-{i}") for i in range(8)]
    rounds = 15

    def inserter():
        for user in users:
            for _ in range(rounds):
                Notification.objects.create(recipient=user, title="in")

    def insert_then_read():
        for user in users:
            for _ in range(rounds):
                n = Notification.objects.create(recipient=user, title="read")
                Notification.objects.filter(pk=n.pk).update(read_at=timezone.now())

    def bulk_inserter():
        for _ in range(rounds):
            Notification.objects.bulk_create([Notification(recipient=u, title="bulk") for u in reversed(users)])

    _in_threads(inserter, insert_then_read, bulk_inserter)

    expected = assert_counts_right(*users)
    assert expected == {u.pk: 2 * rounds for u in users}
    assert {u.pk: counter_of(u.pk) for u in users} == expected


def _waiting_for_this_transaction(pid, statement, timeout=3.0):
    """
    Once the backend ``pid``, running a statement that contains ``statement``, waits for this
    connection's transaction to end, as a row lock's waiter waits for its holder (wait event
    Lock/transactionid, on this transaction's id in pg_locks): the relations of the row locks it
    holds meanwhile (a row's waiter holds the row's tuple lock while it waits), or None if it has
    not after ``timeout``. pg_stat_activity is read afresh each time (inside a transaction it is a
    snapshot); its query may still be the backend's previous one when the wait is seen (the wait
    event and the locks are read live), and then it is read again.
    """
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT coalesce((SELECT array_agg(t.relation::regclass::text ORDER BY 1) FROM pg_locks t"
                "  WHERE t.pid = a.pid AND t.locktype = 'tuple' AND t.granted), '{}')"
                " FROM pg_stat_activity a"
                " WHERE a.pid = %s AND strpos(a.query, %s) > 0 AND a.wait_event_type = 'Lock' AND a.wait_event = 'transactionid'"
                " AND EXISTS (SELECT 1 FROM pg_locks w JOIN pg_locks h ON h.transactionid = w.transactionid"
                "  WHERE w.pid = a.pid AND w.locktype = 'transactionid' AND NOT w.granted"
                "  AND h.pid = pg_backend_pid() AND h.locktype = 'transactionid' AND h.granted)",
                [pid, statement],
            )
            row = cursor.fetchone()
            if row is not None or time.monotonic() > deadline:
                return None if row is None else row[0]
            time.sleep(0.005)


#: The send's paths through the two send functions: (INBOX settings, in a caller's transaction).
RACING_SENDS = {
    # inbox_notification_insert, its own transaction (group commit off).
    "alone": ({"GROUP_COMMIT_MAX": 1}, False),
    # inbox_notification_insert in a savepoint of the caller's transaction.
    "in_a_callers_transaction": ({}, True),
    # inbox_notification_insert_rows, a batch of one. The batch's lock_timeout is the stall time:
    # raised far above deadlock_timeout, so that only the send's order of locks keeps it out of a deadlock.
    "in_a_group_commit_batch": ({"GROUP_COMMIT_STALL_SECONDS": 30.0}, False),
}


@postgresql_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", RACING_SENDS)
def test_on_postgresql_a_send_racing_its_recipients_deletion_in_sql_waits_for_their_counter_and_is_refused_without_a_deadlock(
    path, alice, bob, settings
):
    # A user deleted in SQL (a script, an operator's psql: no journal lock, which Django's delete
    # takes first, inbox/signals.py), in the collector's order: her notifications (their delete
    # trigger takes her counter row's lock), then, once a send to her waits for that lock, her user
    # row. The send must wait for her counter before it holds her user row FOR KEY SHARE, or the
    # deletion waits for the send while the send waits for the deletion (PostgreSQL ends that after
    # deadlock_timeout by aborting one of them).
    inbox_settings, in_transaction = RACING_SENDS[path]
    settings.INBOX = {**settings.INBOX, **inbox_settings}
    send([alice], title="alice's")  # unread and never expires: alice has a counter row
    send([bob], title="bob's")
    alice_id = alice.pk
    users = connection.ops.quote_name(get_user_model()._meta.db_table)
    notifications = connection.ops.quote_name(Notification._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'")
        well_under_deadlock_timeout = cursor.fetchone()[0] / 1000 / 2
    sender_pid, sender_ready, notifications_deleted = [], threading.Event(), threading.Event()
    seen, outcome, at = {}, {}, {}

    def deleter():
        assert sender_ready.wait(10)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {notifications} WHERE recipient_id = %s", [alice_id])
            notifications_deleted.set()
            seen["send waiting"] = _waiting_for_this_transaction(sender_pid[0], "inbox_notification_insert")
            at["user delete"] = time.monotonic()
            cursor.execute(f"DELETE FROM {users} WHERE id = %s", [alice_id])
        at["committed"] = time.monotonic()

    def sender():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            sender_pid.append(cursor.fetchone()[0])
        sender_ready.set()
        assert notifications_deleted.wait(10)
        try:
            with transaction.atomic() if in_transaction else nullcontext():
                send([bob, alice], title="racing")
            outcome["send"] = "stored"
        except Exception as exc:  # noqa: BLE001 - asserted below
            outcome["send"] = exc
        at["send ended"] = time.monotonic()

    _in_threads(deleter, sender)

    # The race was run: the send function waited for the deleting transaction before the user row went.
    assert seen["send waiting"] is not None, "the send function never waited for the deleting transaction"
    # Refused, not deadlocked: alice was gone when the send went on; nothing stored, for bob either.
    assert isinstance(outcome["send"], UnknownRecipients), f"the send ended with {outcome['send']!r}"
    assert outcome["send"].recipients == [alice]
    # Nobody waited for a deadlock to be found: the user's delete went through at once, and the
    # send ended as the deletion committed (a group commit batch aborted by a deadlock is written
    # again alone and refused the same: only the time shows it).
    assert at["committed"] - at["user delete"] < well_under_deadlock_timeout, "the user's delete waited for the send"
    assert at["send ended"] - at["committed"] < well_under_deadlock_timeout, "the send went on waiting after the deletion committed"
    # What it waited for: her counter row (a row's waiter holds the row's tuple lock while it waits).
    assert seen["send waiting"] == [COUNTERS], f"the send waited for a row of {seen['send waiting']}"

    assert not get_user_model().objects.filter(pk=alice_id).exists()
    assert list(Notification.objects.values_list("recipient_id", "title")) == [(bob.pk, "bob's")]
    # No count left for alice's id (a row of 0 at most), and the counter table holds only bob's.
    assert counter_of(alice_id) in (0, None)
    assert counter_table() == rows_the_counter_counts() == {bob.pk: 1}
    assert assert_counts_right(bob) == {bob.pk: 1}


# --- Any sequence of writes -------------------------------------------------------------------

PICK = st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=4)
EXPIRY = st.sampled_from([None, "later", "past"])
USER = st.integers(min_value=0, max_value=2)
OPERATIONS = st.one_of(
    st.tuples(st.just("send"), st.lists(USER, min_size=1, max_size=4), EXPIRY),
    st.tuples(st.just("keyed"), st.lists(USER, min_size=1, max_size=3), st.sampled_from(["k1", "k2"]), EXPIRY, st.booleans()),
    st.tuples(st.just("read"), USER, PICK),
    st.tuples(st.just("unread"), USER, PICK),
    st.tuples(st.just("read_all"), USER),
    st.tuples(st.just("delete"), USER, PICK),
    st.tuples(st.just("expiry"), PICK, EXPIRY),
    st.tuples(st.just("move"), PICK, USER),
    st.tuples(st.just("ack"), USER, PICK),
)


def _apply(operation, users):
    now = timezone.now()
    expiry = {None: None, "later": now + HOUR, "past": now - HOUR}
    ids = list(Notification.objects.order_by("id").values_list("id", flat=True))

    def picked(picks):
        return [ids[p % len(ids)] for p in picks] if ids else []

    kind, *args = operation
    if kind == "send":
        send([users[u] for u in args[0]], expires_at=expiry[args[1]])
    elif kind == "keyed":
        recipients, key, expires, mark_unread = args
        notification_send(
            recipients=[users[u] for u in recipients], title=key, key=key, expires_at=expiry[expires], mark_unread=mark_unread
        )
    elif kind == "read":
        services.notification_mark_read(user=users[args[0]], ids=picked(args[1]))
    elif kind == "unread":
        services.notification_mark_unread(user=users[args[0]], ids=picked(args[1]))
    elif kind == "read_all":
        services.notification_mark_all_read(user=users[args[0]])
    elif kind == "delete":
        services.notification_delete(user=users[args[0]], ids=picked(args[1]))
    elif kind == "expiry":
        Notification.objects.filter(pk__in=picked(args[0])).update(expires_at=expiry[args[1]])
    elif kind == "move":
        # The key is per recipient: a keyed row moves only where its key is free (else the unique constraint refuses).
        target = users[args[1]]
        taken = set(Notification.objects.filter(recipient=target).exclude(key="").values_list("key", flat=True))
        moving = []
        for pk, key in Notification.objects.filter(pk__in=picked(args[0])).exclude(recipient=target).values_list("id", "key"):
            if key:
                if key in taken:
                    continue
                taken.add(key)
            moving.append(pk)
        Notification.objects.filter(pk__in=moving).update(recipient=target)
    elif kind == "ack":
        services.notification_ack(user=users[args[0]], ids=picked(args[1]))


def test_after_any_sequence_of_sends_reads_deletes_and_updates_every_count_equals_the_rows(alice, bob, carol):
    users = [alice, bob, carol]

    @hypothesis_settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(OPERATIONS, min_size=1, max_size=12))
    def check(operations):
        # Each example in a savepoint rolled back at its end: every example starts from no rows.
        with transaction.atomic():
            for step, operation in enumerate(operations):
                _apply(operation, users)
                try:
                    assert_counts_right(*users)
                except AssertionError as exc:
                    raise AssertionError(f"after step {step} {operation!r} of {operations!r}") from exc
            transaction.set_rollback(True)

    check()
