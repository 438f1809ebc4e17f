"""
The PostgreSQL path of a send (inbox/store/postgres.py) through notification_create: one statement,
ids in commit order per recipient, refusals that store nothing, and plans that stay on the indexes.
"""

import contextlib
import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inbox import services
from inbox.models import Notification
from inbox.store import NewSend, postgres
from tests.factories import make_notifications

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's insert function; SQLite holds its write lock from BEGIN"
)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_send_outside_a_transaction_is_one_statement_that_commits_and_pushes(alice, pushed):
    with CaptureQueriesContext(connection) as queries:
        created = services.notification_create(recipients=[alice], title="T")
    # Group commit's statement, a batch of one (inbox/store/group_commit.py; store/sql/notification_insert_rows.sql).
    assert [q["sql"].split("(")[0] for q in queries.captured_queries] == [
        "SELECT is_new, recipient, value FROM inbox_notification_insert_rows"
    ]
    assert not connection.in_atomic_block
    assert Notification.objects.filter(pk=created[0].pk).exists()
    assert [event["notification"]["id"] for _, event in pushed] == [created[0].pk]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_second_send_to_a_recipient_waits_for_the_first_to_commit_and_gets_the_higher_id(alice, bob):
    first_stored, release = threading.Event(), threading.Event()
    second: list = []

    def first():
        try:
            with transaction.atomic():
                services.notification_create(recipients=[alice], title="first")
                first_stored.set()
                release.wait(10)
        finally:
            connection.close()

    def send_second():
        try:
            second.extend(services.notification_create(recipients=[bob, alice], title="second"))
        finally:
            connection.close()

    holder = threading.Thread(target=first)
    holder.start()
    assert first_stored.wait(10)
    waiter = threading.Thread(target=send_second)
    waiter.start()
    waiter.join(0.5)
    still_waiting = waiter.is_alive()
    # While the first is uncommitted, nothing of the second is visible: a catch-up after any id
    # of alice's cannot see the second and miss the first.
    visible = list(Notification.objects.filter(title="second").values_list("recipient_id", flat=True))
    release.set()
    holder.join(10)
    waiter.join(10)
    assert still_waiting and visible == []
    first_id = Notification.objects.get(title="first").pk
    assert [n.recipient_id for n in second] == [bob.pk, alice.pk]
    assert second[1].pk > first_id


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_send_outside_a_transaction_naming_a_deactivated_recipient_is_refused_and_stores_nothing(alice, bob, pushed):
    services.notification_create(recipients=[alice], title="before")
    bob.is_active = False
    bob.save()
    with CaptureQueriesContext(connection) as queries:
        with pytest.raises(services.UnknownRecipients) as refused:
            services.notification_create(recipients=[alice, bob], title="T")
    assert [u.pk for u in refused.value.recipients] == [bob.pk]
    # Refused as a batch of one, then written alone to meet its own answer.
    assert [q["sql"].split("(")[0].rsplit(" ", 1)[-1] for q in queries.captured_queries] == [
        "inbox_notification_insert_rows", "inbox_notification_insert"
    ]
    assert list(Notification.objects.values_list("title", flat=True)) == ["before"]
    assert [event["notification"]["title"] for _, event in pushed.of_type("notification.created")] == ["before"]


@postgresql_only
def test_on_postgresql_the_batch_function_runs_on_generic_plans_from_its_first_call(alice, bob):
    # A generic plan takes the arrays as parameters ($n); a plan made for one call has the values
    # in it. Planning every call of the batch function was a third of its cost (store/sql/notification_insert_rows.sql).
    now = timezone.now()
    fields = dict(category="ops", title="T", message="", data={}, link="", expires_at=None)
    batch = [NewSend(recipient_ids=[user.pk], sender_id=None, created_at=now, **fields) for user in (alice, bob)]
    with connection.cursor() as cursor:
        cursor.execute("DISCARD PLANS")  # whatever this connection's earlier calls left cached
    with explained_plans() as plans:
        postgres.insert_rows(batch)
    [users_check] = [p for p in plans if "FOR KEY SHARE" in p and "ANY (" in p]
    assert "Index Cond: (id = ANY ($" in users_check
    assert Notification.objects.count() == 2


@postgresql_only
def test_on_postgresql_a_refused_send_inside_a_transaction_leaves_it_usable(alice, bob):
    Notification.objects.create(recipient=alice, title="kept")
    bob.is_active = False
    bob.save()
    with transaction.atomic():
        with pytest.raises(services.UnknownRecipients):
            services.notification_create(recipients=[alice, bob], title="T")
        services.notification_create(recipients=[alice], title="after")
    assert sorted(Notification.objects.values_list("title", flat=True)) == ["after", "kept"]


@contextlib.contextmanager
def explained_plans():
    """The plans of the statements run inside, nested ones (the send function's) included, via auto_explain."""
    plans: list[str] = []

    def keep_plan(diag):
        plans.append(diag.message_primary or "")

    with connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'")
        cursor.execute("SET LOCAL auto_explain.log_min_duration = 0")
        cursor.execute("SET LOCAL auto_explain.log_nested_statements = on")
        cursor.execute("SET LOCAL auto_explain.log_level = notice")
    connection.connection.add_notice_handler(keep_plan)
    try:
        yield plans
    finally:
        connection.connection.remove_notice_handler(keep_plan)


@postgresql_only
def test_on_postgresql_a_send_reads_its_recipients_unread_counts_through_their_indexes_even_with_stale_statistics(
    alice, bob, pushed, django_capture_on_commit_callbacks
):
    # Statistics taken on an empty table, then rows: a new deployment's first minutes, or a bench run's
    # fresh database. The function's cached (generic) plan must still count one recipient's rows by
    # the index, not every unread row of every user (bench/JOURNAL.md, finding 33).
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE inbox_notification")
        make_notifications(bob, 3000)
        make_notifications(alice, 2)
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    with explained_plans() as plans, django_capture_on_commit_callbacks(execute=True):
        services.notification_create(recipients=[alice], title="counted")

    [count_plan] = [p for p in plans if "FROM inbox_unread(d.r" in p]
    assert "Index Scan using inbox_unread_counter_pkey" in count_plan
    assert "using inbox_unread_expiring on inbox_notification" in count_plan
    assert "Seq Scan" not in count_plan
    assert [(uid, event["unread"]) for uid, event in pushed] == [(alice.pk, 3)]


@postgresql_only
def test_on_postgresql_a_send_counts_by_the_index_even_when_its_plan_was_made_on_an_empty_table(
    alice, bob, pushed, django_capture_on_commit_callbacks
):
    # The plan PL/pgSQL keeps for the connection is made at the first send, while the table is empty
    # and analyzed so; thousands of rows later the same plan must not scan the table for each send
    # (bench/JOURNAL.md, finding 47).
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE inbox_notification CASCADE")  # no pages at all, as after a purge and VACUUM
        cursor.execute("ANALYZE inbox_notification")
        cursor.execute("DISCARD PLANS")  # whatever this connection's earlier sends left cached
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    with django_capture_on_commit_callbacks(execute=True):
        services.notification_create(recipients=[alice], title="first, planned on an empty table")
    make_notifications(bob, 3000)
    with explained_plans() as plans, django_capture_on_commit_callbacks(execute=True):
        services.notification_create(recipients=[alice], title="second, 3,000 rows later")

    [count_plan] = [p for p in plans if "FROM inbox_unread(d.r" in p]
    assert "Seq Scan" not in count_plan
    assert "using inbox_unread_expiring on inbox_notification" in count_plan
    [users_plan] = [p for p in plans if "FOR KEY SHARE" in p]
    assert "Seq Scan on auth_user" not in users_plan  # the recipients by their primary key, not every user
    assert [(uid, event["unread"]) for uid, event in pushed] == [(alice.pk, 1), (alice.pk, 2)]


@postgresql_only
@pytest.mark.django_db
def test_on_postgresql_both_send_functions_run_without_jit_compilation():
    # Beside a 10M-row inbox each call compiled for 90-130 ms to run for 2 (bench/JOURNAL.md, finding 72).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT proname, proconfig FROM pg_proc WHERE proname IN ('inbox_notification_insert', 'inbox_notification_insert_rows')"
        )
        config = dict(cursor.fetchall())
    assert sorted(config) == ["inbox_notification_insert", "inbox_notification_insert_rows"]
    assert all("jit=off" in settings for settings in config.values()), config
