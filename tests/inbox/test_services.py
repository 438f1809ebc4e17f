"""Services (writes) and selectors (reads) called directly, as other code and the WebSocket consumer do."""

import contextlib
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inbox import selectors, services
from inbox.models import Notification
from tests.factories import make_notification, make_notifications, make_users


def test_notification_create_returns_one_row_per_recipient_in_order(alice, bob, service_account):
    created = services.notification_create(
        recipients=[bob, alice], title="T", message="M", category="ops", data={"k": 1}, link="https://e.com", sender=service_account
    )
    assert [n.recipient_id for n in created] == [bob.pk, alice.pk]
    assert all(n.pk for n in created)
    assert created[0].id < created[1].id
    stored = Notification.objects.get(pk=created[0].id)
    assert (stored.title, stored.message, stored.category, stored.data, stored.link, stored.sender_id) == (
        "T", "M", "ops", {"k": 1}, "https://e.com", service_account.pk,
    )
    assert stored.created_at == created[1].created_at


@pytest.mark.parametrize("has_sender", [True, False])
def test_a_sends_template_is_the_notification_model_init_would_build(has_sender, service_account):
    sender = service_account if has_sender else None
    fields = dict(category="ops", title="T", message="M", data={"k": 1}, link="", created_at=timezone.now(), expires_at=None)
    built, expected = services._unsaved(sender=sender, **fields), Notification(sender=sender, **fields)
    assert {k: v for k, v in vars(built).items() if k != "_state"} == {k: v for k, v in vars(expected).items() if k != "_state"}
    assert (built._state.adding, built._state.db, built._state.fields_cache) == (True, None, expected._state.fields_cache)
    assert built.sender is sender and built.id is None and built.recipient_id is None


def test_notification_create_refuses_a_recipient_who_is_no_longer_active_and_stores_nothing(alice, bob, pushed):
    bob.is_active = False
    bob.save()
    with pytest.raises(services.UnknownRecipients) as refused:
        services.notification_create(recipients=[alice, bob], title="T")
    assert [u.pk for u in refused.value.recipients] == [bob.pk]
    assert Notification.objects.count() == 0
    assert pushed == []


def test_notification_create_stores_one_row_per_recipient_given_twice(alice):
    created = services.notification_create(recipients=[alice, alice], title="T")
    assert len(created) == 2 and created[0].id < created[1].id
    assert Notification.objects.filter(recipient=alice).count() == 2


def test_notification_create_takes_as_many_queries_for_1000_recipients_as_for_10(db):
    users = make_users(1010)
    with CaptureQueriesContext(connection) as few:
        services.notification_create(recipients=users[:10], title="T")
    with CaptureQueriesContext(connection) as many:
        services.notification_create(recipients=users[10:], title="T")
    assert len(many) == len(few)
    assert Notification.objects.count() == 1010


def test_user_resolve_recipients_maps_ids_and_usernames(alice, bob, make_user):
    make_user("gone", is_active=False)
    users, unknown = selectors.user_resolve_recipients(refs=["alice", bob.pk, "alice", alice.pk, "gone", 999_999, "nobody"])
    assert [u.pk for u in users] == [alice.pk, bob.pk]
    assert unknown == ["gone", 999_999, "nobody"]


def test_the_unread_counts_of_many_users_in_one_query(alice, bob, make_user):
    carol = make_user("carol")
    make_notifications(alice, 2)
    make_notification(alice, read_at=timezone.now())
    make_notification(bob, expires_at=timezone.now() - timedelta(seconds=1))
    make_notification(bob)
    with CaptureQueriesContext(connection) as queries:
        counts = selectors.notification_unread_counts(user_ids=[alice.pk, bob.pk, carol.pk, alice.pk])
    assert counts == {alice.pk: 2, bob.pk: 1, carol.pk: 0}
    assert len(queries) == 1


def test_catchup_returns_what_was_missed_oldest_first(alice, bob):
    created = make_notifications(alice, 5)
    make_notifications(bob, 2)
    make_notification(alice, expires_at=timezone.now() - timedelta(seconds=1))
    after = created[1].id
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=after, limit=100)] == [n.id for n in created[2:]]
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=after, limit=2)] == [created[2].id, created[3].id]
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=after, limit=100, upto=created[3].id)] == [
        created[2].id, created[3].id,
    ]


def test_catchup_of_pending_notifications_skips_the_acknowledged_ones(alice):
    delivered = make_notification(alice, delivered_at=timezone.now())
    pending = make_notification(alice)
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=None, limit=10, pending=True)] == [pending.id]
    assert [n.id for n in selectors.notification_catchup(user_id=alice.pk, after=None, limit=10)] == [delivered.id, pending.id]


def test_ack_sets_delivered_at_once_and_only_for_the_owner(alice, bob):
    mine = make_notification(alice)
    theirs = make_notification(bob)
    assert services.notification_ack(user=alice, ids=[mine.id, theirs.id]) == [mine.id]
    mine.refresh_from_db()
    first = mine.delivered_at
    assert first is not None
    assert services.notification_ack(user=alice, ids=[mine.id]) == []
    mine.refresh_from_db()
    assert mine.delivered_at == first
    theirs.refresh_from_db()
    assert theirs.delivered_at is None
    assert mine.state == "delivered"


def test_mark_read_and_delete_ignore_other_users_ids(alice, bob, pushed, django_capture_on_commit_callbacks):
    theirs = make_notification(bob)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.notification_mark_read(user=alice, ids=[theirs.id]) == []
        assert services.notification_delete(user=alice, ids=[theirs.id]) == []
    theirs.refresh_from_db()
    assert theirs.read_at is None
    assert pushed == []


def test_mark_read_handles_at_most_the_id_limit(alice, settings):
    settings.INBOX = {**settings.INBOX, "MAX_IDS_PER_REQUEST": 3}
    created = make_notifications(alice, 5)
    changed = services.notification_mark_read(user=alice, ids=[n.id for n in created])
    assert changed == [n.id for n in created[:3]]


def test_the_newest_id(alice, bob):
    assert selectors.notification_newest_id(user_id=alice.pk) == 0
    created = make_notifications(alice, 3)
    make_notification(bob)
    assert selectors.notification_newest_id(user_id=alice.pk) == created[-1].id


def test_the_state_follows_the_timestamps(alice):
    n = make_notification(alice)
    assert n.state == "pending"
    n.delivered_at = timezone.now()
    assert n.state == "delivered"
    n.read_at = timezone.now()
    assert n.state == "read"
    assert not n.is_expired()
    n.expires_at = timezone.now() - timedelta(seconds=1)
    assert n.is_expired()


postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL's insert function; SQLite holds its write lock from BEGIN"
)


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_send_outside_a_transaction_is_one_statement_that_commits_and_pushes(alice, pushed):
    with CaptureQueriesContext(connection) as queries:
        created = services.notification_create(recipients=[alice], title="T")
    # Group commit's statement, a batch of one (inbox/group_commit.py; migration 0006).
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
    assert [event["notification"]["title"] for _, event in pushed] == ["before"]


@postgresql_only
def test_on_postgresql_the_batch_function_runs_on_generic_plans_from_its_first_call(alice, bob):
    # A generic plan takes the arrays as parameters ($n); a plan made for one call has the values
    # in it. Planning every call of the batch function was a third of its cost (migration 0006).
    now = timezone.now()
    fields = dict(category="ops", title="T", message="", data={}, link="", expires_at=None)
    batch = [
        services._Send(
            template=services._unsaved(sender=None, created_at=now, **fields),
            recipients=[user], recipient_ids=[user.pk], sender=None, now=now, **fields,
        )
        for user in (alice, bob)
    ]
    with connection.cursor() as cursor:
        cursor.execute("DISCARD PLANS")  # whatever this connection's earlier calls left cached
    with explained_plans() as plans:
        services._insert_rows_postgresql(batch)
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
def test_on_postgresql_a_send_counts_the_unread_rows_of_its_recipients_through_their_index_even_with_stale_statistics(
    alice, bob, pushed, django_capture_on_commit_callbacks
):
    # Statistics taken on an empty table, then rows: a new deployment's first minutes, or a bench run's
    # fresh database. The function's cached (generic) plan must still count one recipient's rows by
    # the index, not every unread row of every user (bench/README.md, finding 33).
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE inbox_notification")
        make_notifications(bob, 3000)
        make_notifications(alice, 2)
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    with explained_plans() as plans, django_capture_on_commit_callbacks(execute=True):
        services.notification_create(recipients=[alice], title="counted")

    [count_plan] = [p for p in plans if "count(*) AS unread" in p]
    assert "Index Cond: (recipient_id = " in count_plan
    assert "Seq Scan on inbox_notification" not in count_plan
    assert [(uid, event["unread"]) for uid, event in pushed] == [(alice.pk, 3)]


@postgresql_only
def test_on_postgresql_a_send_counts_by_the_index_even_when_its_plan_was_made_on_an_empty_table(
    alice, bob, pushed, django_capture_on_commit_callbacks
):
    # The plan PL/pgSQL keeps for the connection is made at the first send, while the table is empty
    # and analyzed so; thousands of rows later the same plan must not scan the table for each send
    # (bench/README.md, finding 47).
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

    [count_plan] = [p for p in plans if "count(*) AS unread" in p]
    assert "Seq Scan on inbox_notification" not in count_plan
    assert "Index Only Scan using inbox_unread" in count_plan or "Index Cond: (recipient_id = " in count_plan
    [users_plan] = [p for p in plans if "FOR KEY SHARE" in p]
    assert "Seq Scan on auth_user" not in users_plan  # the recipients by their primary key, not every user
    assert [(uid, event["unread"]) for uid, event in pushed] == [(alice.pk, 1), (alice.pk, 2)]
