"""
A user's deletion racing the writers of their notifications, on PostgreSQL's unread counter
(inbox/store/sql/unread_counter.sql).

Django's collector deletes a user's notifications in chunks of 100 ids, newest first, and the first
chunk's statement trigger locks the user's counter row. A writer that meanwhile locked rows of a
later chunk (a send to several users, a keyed send updating its row in place, the retention
purge) and then wanted that counter deadlocked with it. A deletion now takes the users' journal
locks before the collector deletes anything (inbox/signals.py, ``_user_deleting``), as every writer
takes them first: the writer waits for the deletion instead.

Each test holds the deletion still after its first chunk, until the writer is seen waiting for the
deletion's transaction (pg_stat_activity, pg_blocking_pids()), so the race is run every time.
"""

import threading
import time
from contextlib import nullcontext
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from inbox import services
from inbox.exceptions import UnknownRecipients
from inbox.models import Notification
from inbox.services import retention
from inbox.services.sending import notification_send
from tests.inbox.store.test_unread import counter_of, counter_table, rows_the_counter_counts

pytestmark = [
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="the unread counter, its triggers and the advisory locks are PostgreSQL's; SQLite serializes writers with its write lock",
    ),
    pytest.mark.django_db(transaction=True),
]

User = get_user_model()
#: The collector's delete of a chunk of notifications (not of inbox_notification_<anything>: the quote closes the name).
NOTIFICATIONS_DELETE = 'DELETE FROM "inbox_notification"'
#: More than one chunk of the collector's (GET_ITERATOR_CHUNK_SIZE, 100 ids a statement).
MANY = 150
WAIT = 3.0  # seconds the deletion is held for the writer to be seen waiting, at most


# --- What the counters must be ------------------------------------------------------------------


def deadlock_timeout() -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'")
        return cursor.fetchone()[0] / 1000


# --- The race -----------------------------------------------------------------------------------


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _waiting_for(waiter_pid: int, holder_pid: int, timeout: float):
    """
    Once backend ``waiter_pid`` waits for a lock ``holder_pid`` holds: its ``(wait_event_type,
    wait_event, query)``; None if it has not after ``timeout``. Read in autocommit, so
    pg_stat_activity is fresh each time; it is read before pg_blocking_pids() is asked, so both
    must say so (a backend that starts waiting in between shows its previous statement).
    """
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT wait_event_type, wait_event, query FROM pg_stat_activity"
                " WHERE pid = %s AND wait_event_type = 'Lock' AND %s = ANY(pg_blocking_pids(pid))",
                [waiter_pid, holder_pid],
            )
            row = cursor.fetchone()
            if row is not None or time.monotonic() > deadline:
                return row
            time.sleep(0.005)


def deletion_racing(delete, write) -> dict:
    """
    Run ``delete`` (a user's deletion, committing) in one thread and ``write`` in another: the
    deletion is held after its first ``DELETE FROM "inbox_notification"`` (the collector's first
    chunk) until ``write``, started then, is seen waiting for the deleting transaction (or
    ``WAIT`` seconds passed). Returns what happened: ``waiting`` (the writer's wait, or None),
    ``delete`` ("committed" or its exception), ``write`` (its result or exception), ``chunks``
    (the deletion's statements on the notifications) and monotonic times.
    """
    race = {"waiting": None, "chunks": 0}
    pids, at = {}, {}
    writer_ready, first_chunk_deleted, go_on = threading.Event(), threading.Event(), threading.Event()

    def hold_after_first_chunk(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith(NOTIFICATIONS_DELETE):
            race["chunks"] += 1
            if race["chunks"] == 1:
                first_chunk_deleted.set()
                go_on.wait(WAIT + 5)
                at["delete went on"] = time.monotonic()
        return result

    def deleter():
        try:
            pids["delete"] = _backend_pid()
            assert writer_ready.wait(10)
            with connection.execute_wrapper(hold_after_first_chunk):
                delete()
            race["delete"] = "committed"
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            race["delete"] = exc
        finally:
            at["delete ended"] = time.monotonic()
            first_chunk_deleted.set()  # never leave the writer waiting
            connection.close()

    def writer():
        try:
            pids["write"] = _backend_pid()
            writer_ready.set()
            assert first_chunk_deleted.wait(10)
            at["write started"] = time.monotonic()
            race["write"] = write()
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            race["write"] = exc
        finally:
            at["write ended"] = time.monotonic()
            connection.close()

    threads = [threading.Thread(target=deleter), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    try:
        assert first_chunk_deleted.wait(10), "the deletion never deleted a notification"
        if "delete" in pids and "write" in pids:
            race["waiting"] = _waiting_for(pids["write"], pids["delete"], WAIT)
    finally:
        go_on.set()
        for t in threads:
            t.join(20)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    race["at"] = at
    return race


def assert_the_race_was_run(race):
    # The deletion went in chunks, and the writer, started after the first, waited for it (on a lock
    # the deleting transaction held) while it was held, and could not end before it went on.
    assert race["chunks"] >= 2, f"the collector deleted the notifications in {race['chunks']} statement(s), not in chunks"
    assert race["waiting"] is not None, "the writer never waited for the deleting transaction"
    assert race["at"]["write ended"] > race["at"]["delete went on"]


def assert_no_deadlock(race):
    for who in ("delete", "write"):
        assert "deadlock detected" not in str(race[who]), f"the {who} was aborted: {race[who]!r}"
    assert race["delete"] == "committed", f"the deletion ended with {race['delete']!r}"
    # Nobody waited for PostgreSQL to look for a deadlock: both ended soon after the deletion went
    # on. (A group commit batch aborted by a deadlock is written again alone: only the time shows it.)
    assert race["at"]["write ended"] - race["at"]["delete went on"] < deadlock_timeout(), "the writer waited as long as deadlock_timeout"
    assert race["at"]["delete ended"] - race["at"]["delete went on"] < deadlock_timeout(), "the deletion waited for the writer"


def assert_waited_on_the_journal_lock(race):
    # Where it waited: the users' journal lock (an advisory lock), before it held any of their rows or counters.
    wait_event_type, wait_event, query = race["waiting"]
    assert (wait_event_type, wait_event) == ("Lock", "advisory"), f"the writer waited on {wait_event_type}/{wait_event}: {query}"


# --- The tests ----------------------------------------------------------------------------------


#: The send's paths through the two send functions: (INBOX settings, in a caller's transaction).
SEND_PATHS = {
    "alone": ({"GROUP_COMMIT_MAX": 1}, False),  # inbox_notification_insert, its own transaction
    "in_a_callers_transaction": ({}, True),  # inbox_notification_insert in a savepoint
    # inbox_notification_insert_rows, a batch of one; its lock_timeout (the stall time) far above deadlock_timeout.
    "in_a_group_commit_batch": ({"GROUP_COMMIT_STALL_SECONDS": 30.0}, False),
}


@pytest.mark.parametrize("path", SEND_PATHS)
def test_deleting_two_users_with_a_queryset_while_a_send_to_both_runs_commits_and_refuses_the_send_without_a_deadlock(
    path, make_user, settings
):
    # The collector deletes newest first: b's first chunk locks b's counter; a send to both locks
    # the counters in user order, a's and then b's, and a later chunk holds a's rows (and wants a's counter).
    inbox_settings, in_transaction = SEND_PATHS[path]
    settings.INBOX = {**settings.INBOX, **inbox_settings}
    a, b, carol = make_user("a"), make_user("b"), make_user("carol")
    assert a.pk < b.pk
    Notification.objects.bulk_create([Notification(recipient=a, title="a's") for _ in range(MANY)])
    Notification.objects.bulk_create([Notification(recipient=b, title="b's") for _ in range(MANY)])
    services.notification_create(recipients=[carol], title="carol's")

    def send_to_both():
        with transaction.atomic() if in_transaction else nullcontext():
            return services.notification_create(recipients=[b, a], title="to both")

    race = deletion_racing(lambda: User.objects.filter(pk__in=[a.pk, b.pk]).delete(), send_to_both)

    assert_the_race_was_run(race)
    assert_no_deadlock(race)
    # Refused cleanly: both recipients were gone by the time the send could go on; nothing stored.
    assert isinstance(race["write"], UnknownRecipients), f"the send ended with {race['write']!r}"
    assert {u.pk for u in race["write"].recipients} == {a.pk, b.pk}
    assert_waited_on_the_journal_lock(race)
    assert not User.objects.filter(pk__in=[a.pk, b.pk]).exists()
    assert list(Notification.objects.values_list("recipient_id", "title")) == [(carol.pk, "carol's")]
    assert (counter_of(a.pk) or 0, counter_of(b.pk) or 0) == (0, 0)
    assert counter_table() == rows_the_counter_counts() == {carol.pk: 1}


def test_erasing_a_recipient_while_a_keyed_send_updates_their_row_in_place_refuses_the_send_and_keeps_the_counters_right(bob):
    # The keyed row is the user's oldest (the collector's last chunk): the keyed send, had it locked
    # it first, would then want the counter that the deletion's first chunk holds.
    alice = services.recipient_provision(external_id="erase-me")[0].user
    keyed = notification_send(recipients=[alice], title="keyed", key="build").notifications[0]
    Notification.objects.filter(pk=keyed.pk).update(read_at=timezone.now())  # read: the keyed send makes it unread again
    Notification.objects.bulk_create([Notification(recipient=alice, title="later") for _ in range(MANY)])
    notification_send(recipients=[bob], title="bob's keyed", key="build")
    alice_id = alice.pk
    assert counter_of(alice_id) == MANY

    race = deletion_racing(
        lambda: services.recipient_erase(external_id="erase-me"),
        lambda: notification_send(recipients=[alice], title="keyed again", key="build", mark_unread=True),
    )

    assert_the_race_was_run(race)
    assert_no_deadlock(race)
    assert isinstance(race["write"], UnknownRecipients), f"the keyed send ended with {race['write']!r}"
    assert [u.pk for u in race["write"].recipients] == [alice_id]
    assert_waited_on_the_journal_lock(race)
    assert not User.objects.filter(pk=alice_id).exists()
    assert not Notification.objects.filter(recipient_id=alice_id).exists()
    # The counters equal the rows: nothing left for alice, bob's keyed row counted once.
    assert counter_of(alice_id) in (0, None)
    assert counter_table() == rows_the_counter_counts() == {bob.pk: 1}


def test_deleting_a_user_while_the_retention_purge_takes_their_old_row_lets_both_commit_without_a_deadlock(alice, bob, settings):
    # alice's oldest row is past retention (the collector's last chunk); the purge, had it locked it
    # first, would then want the counter that the deletion's first chunk holds. bob's old row goes
    # in the same purge batch.
    settings.INBOX = {**settings.INBOX, "RETENTION_DAYS": {"*": 30}}
    long_ago = timezone.now() - timedelta(days=3650)
    old = Notification.objects.create(recipient=alice, title="old")
    Notification.objects.filter(pk=old.pk).update(created_at=long_ago)  # unread, past retention
    Notification.objects.bulk_create([Notification(recipient=alice, title="later") for _ in range(MANY)])
    bobs_old = Notification.objects.create(recipient=bob, title="bob's old")
    Notification.objects.filter(pk=bobs_old.pk).update(created_at=long_ago)
    Notification.objects.create(recipient=bob, title="bob's new")
    alice_id = alice.pk

    def delete_alice():
        with transaction.atomic():
            User.objects.get(pk=alice_id).delete()

    race = deletion_racing(delete_alice, retention.purge)

    assert_the_race_was_run(race)
    assert_no_deadlock(race)
    # The purge committed too: alice's old row had gone with her, bob's went.
    assert isinstance(race["write"], retention.PurgeReport), f"the purge ended with {race['write']!r}"
    assert (race["write"].expired, race["write"].purged) == (0, 1)
    assert_waited_on_the_journal_lock(race)
    assert not User.objects.filter(pk=alice_id).exists()
    assert list(Notification.objects.values_list("recipient_id", "title")) == [(bob.pk, "bob's new")]
    assert counter_of(alice_id) in (0, None)
    assert counter_table() == rows_the_counter_counts() == {bob.pk: 1}
