"""
Group commit (inbox/store/group_commit.py): writes asked for while another is in flight are made
together by one thread, and each thread gets its own answer. First the mechanism with plain
Python writes, then the sends it batches on PostgreSQL.
"""

import threading
import time
from datetime import timedelta

import psycopg.errors
import pytest
from django.db import DataError, OperationalError, connection, connections
from django.utils import timezone

from inbox import selectors, services
from inbox.models import Notification
from inbox.store import NewSend, postgres
from inbox.store.group_commit import RETRY_ALONE, GroupCommit


def wait_until(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Gate:
    """
    A write that records its batches (``label`` of each item) and holds the first one until
    ``waiting`` others have queued; then ``write`` (by default: "stored <item>" each), except the
    second batch when ``fail`` is given.
    """

    def __init__(self, committer_ref, waiting, fail=None, write=None, label=lambda item: item):
        self.committer_ref = committer_ref
        self.waiting = waiting
        self.fail = fail
        self.write = write or (lambda items: [f"stored {item}" for item in items])
        self.label = label
        self.batches = []

    def __call__(self, items):
        self.batches.append([self.label(item) for item in items])
        if len(self.batches) == 1:
            wait_until(lambda: len(self.committer_ref()._queue) >= self.waiting)
        if self.fail is not None and len(self.batches) == 2:
            raise self.fail
        return self.write(items)


def run_in_threads(committer, items):
    """Submit the first item, then the others while the first is being written; answers by item."""
    answers = {}

    def submit(item):
        try:
            answers[item] = committer.submit(item)
        except Exception as exc:  # noqa: BLE001 - the test reads it
            answers[item] = exc

    first = threading.Thread(target=submit, args=(items[0],))
    first.start()
    wait_until(lambda: committer._writers)
    others = [threading.Thread(target=submit, args=(item,)) for item in items[1:]]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(10)
    return answers


def committer_with(write_factory, max_batch=32, on_error=lambda exc: RETRY_ALONE):
    holder = {}
    write = write_factory(lambda: holder["c"])
    holder["c"] = GroupCommit(write, on_error, max_batch=max_batch, stall_seconds=30)
    return holder["c"], write


def test_a_write_with_nothing_in_flight_goes_straight_through_as_a_batch_of_one():
    committer, write = committer_with(lambda ref: Gate(ref, waiting=0))
    assert committer.submit("a") == "stored a"
    assert committer.submit("b") == "stored b"
    assert write.batches == [["a"], ["b"]]
    assert committer._writers == 0 and committer._queue == []


def test_writes_asked_for_during_a_write_are_made_together_in_one_call_and_each_gets_its_own_answer():
    committer, write = committer_with(lambda ref: Gate(ref, waiting=3))
    answers = run_in_threads(committer, ["a", "b", "c", "d"])
    assert answers == {item: f"stored {item}" for item in "abcd"}
    assert write.batches[0] == ["a"]
    assert sorted(write.batches[1]) == ["b", "c", "d"]
    assert len(write.batches) == 2
    assert committer._writers == 0 and committer._queue == []


def test_a_batch_holds_at_most_max_batch_writes_and_the_rest_follow_in_the_next():
    committer, write = committer_with(lambda ref: Gate(ref, waiting=5), max_batch=2)
    answers = run_in_threads(committer, ["a", "b", "c", "d", "e", "f"])
    assert answers == {item: f"stored {item}" for item in "abcdef"}
    assert [len(b) for b in write.batches] == [1, 2, 2, 1]


def test_when_a_batch_fails_with_retry_alone_every_writer_in_it_is_told_to_write_alone_and_later_batches_go_on():
    committer, write = committer_with(lambda ref: Gate(ref, waiting=3, fail=ValueError("refused")), max_batch=2)
    answers = run_in_threads(committer, ["a", "b", "c", "d"])
    failed = write.batches[1]
    assert [answers[item] for item in failed] == [RETRY_ALONE, RETRY_ALONE]
    assert {answers[item] for item in "abcd" if item not in failed} == {f"stored {item}" for item in "abcd" if item not in failed}
    assert len(write.batches) == 3 and committer._writers == 0


def test_when_a_batch_fails_otherwise_its_writer_raises_the_error_and_every_other_writer_a_new_one_of_its_own():
    errors = []

    def on_error(exc):
        errors.append(RuntimeError(f"batch failed: {exc}"))
        return errors[-1]

    refused = ValueError("refused")
    committer, write = committer_with(lambda ref: Gate(ref, waiting=3, fail=refused), on_error=on_error)
    answers = run_in_threads(committer, ["a", "b", "c", "d"])
    failed = write.batches[1]
    assert sorted(failed) == ["b", "c", "d"]
    writer, *others = failed  # the first of a batch is the thread that wrote it
    assert answers[writer] is refused
    assert all(isinstance(answers[item], RuntimeError) and answers[item] in errors for item in others)
    assert len({id(answers[item]) for item in others}) == len(others)
    assert answers["a"] == "stored a" and committer._writers == 0


def test_a_write_that_hangs_holds_the_next_one_for_the_stall_time_at_most_then_it_is_written_alone_beside_it():
    first_started, release = threading.Event(), threading.Event()
    batches = []

    def write(items):
        batches.append(list(items))
        if items == ["slow"]:
            first_started.set()
            assert release.wait(10)
        return [f"stored {item}" for item in items]

    committer = GroupCommit(write, lambda exc: RETRY_ALONE, max_batch=32, stall_seconds=0.2)
    answers = {}
    slow = threading.Thread(target=lambda: answers.setdefault("slow", committer.submit("slow")))
    slow.start()
    assert first_started.wait(10)
    started = time.monotonic()
    answers["quick"] = committer.submit("quick")  # returns while the slow one still hangs
    waited = time.monotonic() - started
    still_hanging = slow.is_alive()
    release.set()
    slow.join(10)
    assert still_hanging and 0.2 <= waited < 5
    assert answers == {"slow": "stored slow", "quick": "stored quick"}
    assert batches == [["slow"], ["quick"]] and committer._writers == 0


postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="group commit writes through PostgreSQL's insert_rows function")


def _send(recipient, title, *, sender=None, now=None, expires_at=None, data=None):
    return NewSend(
        recipient_ids=[recipient.pk], sender_id=sender.pk if sender is not None else None, category="ops", title=title,
        message="M " + title, data=data or {}, link="", created_at=now or timezone.now(), expires_at=expires_at,
    )


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_sends_written_together_each_get_their_own_row_id_and_unread_count(alice, bob, service_account):
    services.notification_create(recipients=[alice, alice], title="before")
    now = timezone.now()
    sends = [
        _send(alice, "a", sender=service_account, data={"k": 1}),
        _send(bob, "b"),
        _send(alice, "c", expires_at=now - timedelta(seconds=1), now=now),
        _send(alice, "d"),
    ]
    written = postgres.insert_rows(sends)

    ids = [ids[0] for ids, _ in written]
    assert [counts for _, counts in written] == [{alice.pk: 3}, {bob.pk: 1}, {alice.pk: 3}, {alice.pk: 4}]
    stored = {n.title: n for n in Notification.objects.filter(pk__in=ids)}
    assert [stored[t].pk for t in "abcd"] == ids
    assert (stored["a"].recipient_id, stored["a"].sender_id, stored["a"].data, stored["a"].message) == (alice.pk, service_account.pk, {"k": 1}, "M a")
    assert (stored["b"].recipient_id, stored["b"].sender_id, stored["b"].data) == (bob.pk, None, {})
    assert stored["c"].expires_at == now - timedelta(seconds=1)
    assert selectors.notification_unread_count(user_id=alice.pk) == 4


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_batch_naming_a_deactivated_recipient_stores_nothing_and_says_who(alice, bob):
    bob.is_active = False
    bob.save()
    with pytest.raises(Exception) as refused:
        postgres.insert_rows([_send(alice, "a"), _send(bob, "b")])
    assert refused.value.__cause__.sqlstate == postgres.INACTIVE_RECIPIENTS_SQLSTATE
    assert refused.value.__cause__.diag.message_detail == str(bob.pk)
    assert postgres.batch_error(refused.value) is RETRY_ALONE
    assert Notification.objects.count() == 0


def _django_error(cls, psycopg_cls, message):
    error = cls(message)
    error.__cause__ = psycopg_cls(message)
    return error


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("server closed the connection unexpectedly"),
        _django_error(OperationalError, psycopg.errors.AdminShutdown, "terminating connection due to administrator command"),
        _django_error(OperationalError, psycopg.errors.ProtocolViolation, "server conn crashed?"),
    ],
    ids=["no answer", "57P01 terminated", "08P01 from a proxy"],
)
def test_a_lost_connection_fails_every_send_of_its_batch_with_an_error_of_its_own_instead_of_writing_again(error):
    answer = postgres.batch_error(error)
    assert isinstance(answer, OperationalError) and answer is not error and answer.args == error.args


@pytest.mark.parametrize(
    "error",
    [
        _django_error(OperationalError, psycopg.errors.LockNotAvailable, "canceling statement due to lock timeout"),
        _django_error(OperationalError, psycopg.errors.DeadlockDetected, "deadlock detected"),
        DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
        postgres.BatchNotSent(TypeError("Type is not JSON serializable: object")),
    ],
    ids=["55P03 lock timeout", "40P01 deadlock", "not sendable", "not built"],
)
def test_a_batch_refused_or_never_sent_stored_nothing_so_each_of_its_sends_is_written_alone(error):
    assert postgres.batch_error(error) is RETRY_ALONE


def test_any_other_failure_of_a_batch_fails_each_send_without_writing_again():
    assert isinstance(postgres.batch_error(KeyError("bug")), RuntimeError)


def test_when_on_error_itself_fails_every_waiter_still_gets_an_answer():
    def on_error(exc):
        raise LookupError("on_error failed")

    committer, write = committer_with(lambda ref: Gate(ref, waiting=2, fail=ValueError("refused")), on_error=on_error)
    answers = run_in_threads(committer, ["a", "b", "c"])
    writer, other = write.batches[1]
    assert isinstance(answers[writer], ValueError)
    assert isinstance(answers[other], LookupError)
    assert committer._writers == 0


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_batch_whose_parameters_cannot_be_built_sends_nothing(alice):
    with pytest.raises(postgres.BatchNotSent):
        postgres.insert_rows([_send(alice, "a"), _send(alice, "b", data={"x": object()})])
    assert Notification.objects.count() == 0


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_batch_that_gets_no_connection_sends_nothing_so_each_send_tries_alone(alice, monkeypatch):
    def no_connection():
        raise OperationalError("couldn't get a connection after 3.00 sec")

    monkeypatch.setattr(connection, "ensure_connection", no_connection)
    with pytest.raises(postgres.BatchNotSent) as not_sent:
        postgres.insert_rows([_send(alice, "a"), _send(alice, "b")])
    monkeypatch.undo()
    assert postgres.batch_error(not_sent.value) is RETRY_ALONE
    assert Notification.objects.count() == 0


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_lone_send_that_gets_no_connection_fails_with_that_error_and_is_not_tried_again(alice, monkeypatch):
    attempts = []

    def no_connection():
        attempts.append(1)
        raise OperationalError("couldn't get a connection after 3.00 sec")

    monkeypatch.setattr(connection, "ensure_connection", no_connection)
    with pytest.raises(OperationalError, match="couldn't get a connection") as failed:
        services.notification_create(recipients=[alice], title="alone")
    monkeypatch.undo()
    assert not isinstance(failed.value, postgres.BatchNotSent)
    assert len(attempts) == 1  # one wait for the pool, not a second one "alone"
    assert Notification.objects.count() == 0


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_recipient_locked_elsewhere_holds_only_its_own_send_not_the_rest_of_its_batch(
    alice, bob, pushed, held_first_batch, settings
):
    # Another connection holds bob's lock bucket in a long transaction (as a slow send to bob would).
    other = connections.create_connection("default")
    other.set_autocommit(False)
    with other.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [postgres.LOCK_NAMESPACE, postgres.lock_buckets([bob.pk])[0]])
    held_first_batch.waiting = 2
    results = {}
    try:
        senders = threading.Thread(
            target=lambda: results.update(_concurrent_sends([(alice, "first"), (alice, "a1"), (bob, "b1")]))
        )
        senders.start()
        wait_until(lambda: Notification.objects.filter(title="a1").exists())
        bob_waiting = "b1" not in results
    finally:
        other.rollback()
        other.close()
    senders.join(20)
    assert sorted(held_first_batch.batches[1]) == ["a1", "b1"]  # the batch gave up on the lock: 55P03
    assert bob_waiting and [n.title for n in results["b1"]] == ["b1"]
    assert sorted(Notification.objects.values_list("title", flat=True)) == ["a1", "b1", "first"]
    assert sorted(event["notification"]["title"] for _, event in pushed) == ["a1", "b1", "first"]


@pytest.fixture
def held_first_batch(monkeypatch):
    """Group commit's first write waits until ``held_first_batch.waiting`` sends have queued behind it."""
    committer = postgres.group_commit()
    if committer is None:
        pytest.skip('INBOX["GROUP_COMMIT_MAX"] is 1: sends are written alone')
    held = Gate(lambda: committer, waiting=0, write=committer._write, label=lambda pending: pending.send.title)
    monkeypatch.setattr(committer, "_write", held)
    monkeypatch.setattr(committer, "stall_seconds", 30)
    return held


def _concurrent_sends(sends):
    """notification_create in a thread per send, the first one started first; results or errors by title."""
    results = {}

    def send(recipient, title):
        try:
            results[title] = services.notification_create(recipients=[recipient], title=title)
        except Exception as exc:  # noqa: BLE001 - the test reads it
            results[title] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=s) for s in sends]
    threads[0].start()
    wait_until(lambda: postgres.group_commit()._writers)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(20)
    return results


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_concurrent_sends_are_written_in_one_statement_and_each_is_stored_counted_and_pushed(
    alice, bob, pushed, held_first_batch
):
    held_first_batch.waiting = 4
    results = _concurrent_sends([(alice, "first"), (alice, "a1"), (bob, "b1"), (alice, "a2"), (bob, "b2")])

    assert held_first_batch.batches[0] == ["first"]
    assert sorted(held_first_batch.batches[1]) == ["a1", "a2", "b1", "b2"] and len(held_first_batch.batches) == 2
    stored = {n.title: n for n in Notification.objects.all()}
    assert {title: [n.pk for n in created] for title, created in results.items()} == {t: [stored[t].pk] for t in results}
    frames = {event["notification"]["title"]: (uid, event["unread"]) for uid, event in pushed}
    second = held_first_batch.batches[1]
    alice_order = [t for t in second if t.startswith("a")]
    bob_order = [t for t in second if t.startswith("b")]
    assert frames["first"] == (alice.pk, 1)
    assert [frames[t] for t in alice_order] == [(alice.pk, 2), (alice.pk, 3)]
    assert [frames[t] for t in bob_order] == [(bob.pk, 1), (bob.pk, 2)]
    assert [stored[t].pk for t in second] == sorted(stored[t].pk for t in second)
    # Pushed by the thread that wrote the batch, in id order: woken together, the senders' own
    # threads would race, and a client resuming after the highest id it saw could miss a lower one.
    assert [event["notification"]["id"] for _, event in pushed] == sorted(n.pk for n in stored.values())


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_deactivated_recipient_refuses_only_its_own_send_of_a_batch(alice, bob, make_user, pushed, held_first_batch):
    carol = make_user("carol")
    carol.is_active = False
    carol.save()
    held_first_batch.waiting = 3
    results = _concurrent_sends([(alice, "first"), (alice, "a1"), (carol, "c1"), (bob, "b1")])

    assert sorted(held_first_batch.batches[1]) == ["a1", "b1", "c1"]
    assert isinstance(results["c1"], services.UnknownRecipients)
    assert [u.pk for u in results["c1"].recipients] == [carol.pk]
    assert sorted(Notification.objects.values_list("title", flat=True)) == ["a1", "b1", "first"]
    assert sorted(event["notification"]["title"] for _, event in pushed.of_type("notification.created")) == ["a1", "b1", "first"]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_value_postgresql_refuses_fails_only_the_send_that_carries_it(alice, bob, pushed, held_first_batch):
    held_first_batch.waiting = 2
    results = _concurrent_sends([(alice, "first"), (alice, "bad\x00title"), (bob, "b1")])

    assert sorted(held_first_batch.batches[1]) == ["b1", "bad\x00title"]
    assert isinstance(results["bad\x00title"], DataError)
    assert [n.pk for n in results["b1"]] == list(Notification.objects.filter(title="b1").values_list("pk", flat=True))
    assert sorted(Notification.objects.values_list("title", flat=True)) == ["b1", "first"]

