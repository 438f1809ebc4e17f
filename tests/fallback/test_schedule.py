"""The durable schedule: what a send schedules, what an ack, a read, a preference or quiet hours do to it."""

from __future__ import annotations

from datetime import time, timedelta
from time import monotonic, sleep

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inbox import services
from inbox.fallback.scheduler import MAX_IDS_PER_TASK
from inbox.models import CategoryPreference, DeliveryProfile, FallbackDelivery, Notification
from inbox.preferences import preferences_for_user, quiet_hours_end

from .support import one_flush, outcomes, run_due, scheduled, scheduled_ids, send, time_passes
from .test_web_push import Browser, dana_browser, push_service  # noqa: F401 (fixtures of the loopback push service)

pytestmark = pytest.mark.django_db


@pytest.fixture
def dana(make_user):
    user = make_user("dana")
    user.email = "dana@example.com"
    user.save()
    return user


def test_a_send_to_three_people_schedules_one_push_row_and_one_email_row_carrying_their_ids(dana, make_user):
    erin, frank = make_user("erin"), make_user("frank")
    before = timezone.now()
    sent = send([dana, erin, frank], title="Build failed")
    (push,), (email,) = scheduled("push_fallbacks"), scheduled("email_fallbacks")
    assert len(scheduled()) == 2
    assert sorted(push.args_kwargs["kwargs"]["notification_ids"]) == sorted(n.pk for n in sent)
    assert sorted(email.args_kwargs["kwargs"]["notification_ids"]) == sorted(n.pk for n in sent)
    assert before + timedelta(seconds=30) <= push.run_after <= timezone.now() + timedelta(seconds=30)
    assert before + timedelta(seconds=900) <= email.run_after <= timezone.now() + timedelta(seconds=900)


def test_each_category_may_have_its_own_delays(dana, settings):
    settings.INBOX = {**settings.INBOX, "PUSH_AFTER_SECONDS_BY_CATEGORY": {"chat": 5}, "EMAIL_AFTER_SECONDS_BY_CATEGORY": {"chat": 120}}
    n = send([dana], category="chat")[0]
    assert scheduled("push_fallbacks")[0].run_after == n.created_at + timedelta(seconds=5)
    assert scheduled("email_fallbacks")[0].run_after == n.created_at + timedelta(seconds=120)


def test_sends_scheduled_together_share_a_row_per_delay_due_when_the_latest_of_them_is(dana, make_user, settings):
    settings.INBOX = {**settings.INBOX, "PUSH_AFTER_SECONDS_BY_CATEGORY": {"chat": 5}}
    erin = make_user("erin")
    with one_flush(settings):
        first = send([dana, erin], category="order")
        chat = send([dana], category="chat")[0]
        last = send([erin], category="billing")[0]
    assert len(scheduled("push_fallbacks")) == 2 and len(scheduled("email_fallbacks")) == 1
    quick, usual = scheduled("push_fallbacks")
    assert quick.args_kwargs["kwargs"]["notification_ids"] == [chat.pk]
    assert quick.run_after == chat.created_at + timedelta(seconds=5)
    assert sorted(usual.args_kwargs["kwargs"]["notification_ids"]) == sorted([*(n.pk for n in first), last.pk])
    assert usual.run_after == last.created_at + timedelta(seconds=30)  # nobody's push before it is due
    assert scheduled_ids("email_fallbacks") == sorted([*(n.pk for n in first), chat.pk, last.pk])
    assert scheduled("email_fallbacks")[0].run_after == last.created_at + timedelta(seconds=900)


def test_a_ten_thousand_recipient_send_is_twenty_rows_in_one_insert_not_a_row_per_notification(make_user):
    from django_tasks_db.models import DBTaskResult

    User = get_user_model()
    User.objects.bulk_create([User(username=f"bulk-{i}", password="!") for i in range(10_000)])
    recipients = list(User.objects.filter(username__startswith="bulk-"))
    with CaptureQueriesContext(connection) as queries:
        sent = send(recipients, title="Maintenance tonight")
    inserts = [q["sql"] for q in queries.captured_queries if "INSERT INTO" in q["sql"] and "dbtaskresult" in q["sql"]]
    assert len(sent) == 10_000
    assert len(inserts) == 1
    rows = DBTaskResult.objects.filter(status="READY")
    assert rows.count() == 20
    assert {len(r.args_kwargs["kwargs"]["notification_ids"]) for r in rows} == {MAX_IDS_PER_TASK}
    assert scheduled_ids("push_fallbacks") == scheduled_ids("email_fallbacks") == sorted(n.pk for n in sent)


def test_a_batch_everyone_acked_in_time_is_one_query_and_pushes_nothing(dana, make_user):
    from inbox.fallback.tasks import push_fallbacks

    people = [dana, make_user("erin"), make_user("frank")]
    for person, n in zip(people, send(people)):
        services.notification_ack(user=person, ids=[n.pk])
    (row,) = scheduled("push_fallbacks")
    with CaptureQueriesContext(connection) as queries:
        result = push_fallbacks.call(**row.args_kwargs["kwargs"])
    assert result == {"outcome": "batch", "ids": 3, "done": {"acked": 3}}
    assert len(queries.captured_queries) == 1
    assert not FallbackDelivery.objects.exists()


@pytest.mark.parametrize("vapid", [False, True], ids=["push not configured", "nobody subscribed"])
def test_a_batch_nobody_can_be_pushed_to_costs_the_same_few_queries_for_2_or_20_people(make_user, settings, vapid):
    from inbox.fallback.tasks import push_fallbacks

    from .test_web_push import VAPID_KEY

    if vapid:
        settings.INBOX = {**settings.INBOX, "VAPID_PRIVATE_KEY": VAPID_KEY}
    outcome = "no_subscription" if vapid else "not_configured"
    queries_for = {}
    for size in (2, 20):
        send([make_user(f"p{size}-{i}") for i in range(size)])
        row = scheduled("push_fallbacks")[-1]
        with CaptureQueriesContext(connection) as queries:
            result = push_fallbacks.call(**row.args_kwargs["kwargs"])
        assert result == {"outcome": "batch", "ids": size, "done": {outcome: size}}
        queries_for[size] = len(queries.captured_queries)
    assert queries_for[20] == queries_for[2] <= 5, queries_for
    assert not FallbackDelivery.objects.exists()


def test_in_a_batch_a_push_held_back_by_preferences_is_still_recorded_as_skipped(dana, make_user, settings):
    from inbox.fallback.tasks import push_fallbacks

    from .test_web_push import VAPID_KEY

    settings.INBOX = {**settings.INBOX, "VAPID_PRIVATE_KEY": VAPID_KEY}
    erin = make_user("erin")
    CategoryPreference.objects.create(user=dana, category="general", web_push=False)
    muted, unsubscribed = send([dana, erin])
    (row,) = scheduled("push_fallbacks")
    result = push_fallbacks.call(**row.args_kwargs["kwargs"])
    assert result == {"outcome": "batch", "ids": 2, "done": {"no_subscription": 1, "skipped": 1}}
    skipped = FallbackDelivery.objects.get()
    assert (skipped.notification_id, skipped.status, skipped.reason) == (muted.pk, FallbackDelivery.Status.SKIPPED, "off")


def test_a_batch_everyone_read_in_time_is_one_query_and_emails_nothing(dana, make_user):
    from inbox.fallback.tasks import email_fallbacks

    people = [dana, make_user("erin")]
    for person, n in zip(people, send(people)):
        services.notification_mark_read(user=person, ids=[n.pk])
    (row,) = scheduled("email_fallbacks")
    with CaptureQueriesContext(connection) as queries:
        result = email_fallbacks.call(**row.args_kwargs["kwargs"])
    assert result == {"outcome": "batch", "ids": 2, "done": {"read": 2}}
    assert len(queries.captured_queries) == 1
    assert mail.outbox == []


def test_a_batch_counts_what_it_set_aside_and_runs_the_rest(dana, make_user):
    read, acked, deleted, expired, waiting = send([dana, *(make_user(f"u{i}") for i in range(4))])
    services.notification_mark_read(user=read.recipient, ids=[read.pk])
    services.notification_ack(user=acked.recipient, ids=[acked.pk])
    Notification.objects.filter(pk=deleted.pk).delete()
    Notification.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    time_passes(30)
    (result,) = [r for r in run_due() if r["task"] == "push_fallbacks"]
    assert result == {
        "task": "push_fallbacks", "outcome": "batch", "ids": 5,
        "done": {"acked": 1, "expired": 1, "gone": 1, "not_configured": 1, "read": 1},
    }


def test_in_a_push_batch_only_the_one_nobody_acked_is_pushed_to_its_persons_browser(dana_browser, push_service, make_user, client_for):
    dana, browser = dana_browser
    erin, frank = make_user("erin"), make_user("frank")
    erins = Browser(f"http://127.0.0.1:{push_service.port}/push/erin-firefox")
    assert client_for(erin).post("/api/push-subscriptions/", erins.subscription_json(), format="json").status_code == 201
    sent = {n.recipient_id: n for n in send([dana, erin, frank], title="Deploy finished")}
    for person in (erin, frank):
        services.notification_ack(user=person, ids=[sent[person.pk].pk])
    time_passes(30)
    (result,) = [r for r in run_due() if r["task"] == "push_fallbacks"]
    assert result["done"] == {"acked": 2, "sent": 1}
    (request,) = push_service.requests
    assert request["path"] == "/push/dana-chrome"
    assert browser.decrypt(request["body"])["notification"]["id"] == sent[dana.pk].pk
    assert list(FallbackDelivery.objects.values_list("notification_id", "channel", "status")) == [(sent[dana.pk].pk, "web_push", "sent")]


def test_two_notifications_of_one_person_in_one_email_batch_are_one_email(dana, make_user, smtp_server, settings):
    erin = make_user("erin")
    erin.email = "erin@example.com"
    erin.save()
    with one_flush(settings):
        send([dana, erin], title="Invoice paid")
        send([dana], title="Build failed")
    (row,) = scheduled("email_fallbacks")
    assert len(row.args_kwargs["kwargs"]["notification_ids"]) == 3
    time_passes(900)
    (result,) = [r for r in run_due() if r["task"] == "email_fallbacks"]
    assert result["done"] == {"already": 1, "sent": 2}
    assert sorted(e.rcpt_tos[0] for e in smtp_server.envelopes) == ["dana@example.com", "erin@example.com"]
    (danas,) = [m for m in smtp_server.messages if m["To"] == "dana@example.com"]
    assert danas["Subject"] == "2 unread notifications"
    assert FallbackDelivery.objects.filter(channel="email", status="sent").count() == 3


urlpatterns: list = []  # a URLconf without the unsubscribe link, for the test below


def test_an_email_that_cannot_be_built_fails_alone_and_the_rest_of_its_batch_is_sent(dana, make_user, settings):
    erin = make_user("erin")
    erin.email = "erin@example.com"
    erin.save()
    with one_flush(settings):
        broken = send([dana], category="order")[0]  # its message needs the unsubscribe link
        send([erin], category="security", title="New sign-in")  # a critical one has none
    settings.ROOT_URLCONF = __name__
    time_passes(900)
    (result,) = [r for r in run_due() if r["task"] == "email_fallbacks"]
    assert result["done"] == {"error": 1, "sent": 1}
    assert result["errors"][str(broken.pk)].startswith("ImproperlyConfigured: The fallback e-mails need their unsubscribe URL")
    assert [m.to for m in mail.outbox] == [["erin@example.com"]]
    assert not FallbackDelivery.objects.filter(notification=broken).exists()  # nothing claimed for it


def test_the_rows_the_single_id_tasks_wrote_still_run(dana):
    from django_tasks_db.models import DBTaskResult

    from inbox.fallback.tasks import email_fallback, push_fallback

    n = send([dana], title="Scheduled before the batches")[0]
    DBTaskResult.objects.all().delete()
    push_fallback.enqueue(notification_id=n.pk)
    email_fallback.enqueue(notification_id=n.pk)  # kwargs={"notification_id": ...}, as they were written
    results = run_due()
    assert sorted((r["task"], r["outcome"]) for r in results) == [("email_fallback", "sent"), ("push_fallback", "not_configured")]
    assert [m.subject for m in mail.outbox] == ["Scheduled before the batches"]


def test_a_notification_a_device_acked_in_time_gets_no_push(dana):
    n = send([dana])[0]
    services.notification_ack(user=dana, ids=[n.pk])
    time_passes(30)
    assert outcomes(run_due(), "push_fallback") == ["acked"]
    assert not FallbackDelivery.objects.exists()


def test_a_notification_read_in_time_gets_no_email(dana):
    n = send([dana])[0]
    services.notification_mark_read(user=dana, ids=[n.pk])
    time_passes(900)
    results = run_due()
    assert outcomes(results, "email_fallback") == ["read"] and outcomes(results, "push_fallback") == ["read"]
    assert mail.outbox == []


def test_three_unread_notifications_make_one_email_and_the_others_tasks_find_nothing_left(dana):
    for title in ("One", "Two", "Three"):
        send([dana], title=title)
    time_passes(900)
    results = run_due()
    assert sorted(outcomes(results, "email_fallback")) == ["already", "already", "sent"]
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["dana@example.com"]
    assert mail.outbox[0].subject == "3 unread notifications"
    assert all(title in mail.outbox[0].body for title in ("One", "Two", "Three"))
    assert FallbackDelivery.objects.filter(channel="email", status="sent").count() == 3


def test_running_the_same_email_task_twice_sends_one_email(dana):
    n = send([dana])[0]
    from inbox.fallback.tasks import email_fallback

    email_fallback.enqueue(notification_id=n.pk)  # a duplicate, as a retry racing the first would be
    time_passes(900)
    assert sorted(outcomes(run_due(), "email_fallback")) == ["already", "sent"]
    assert len(mail.outbox) == 1


def test_an_email_turned_off_for_the_category_is_recorded_as_skipped_and_never_sent(dana):
    CategoryPreference.objects.create(user=dana, category="marketing", email=False)
    n = send([dana], category="marketing")[0]
    time_passes(900)
    assert outcomes(run_due(), "email_fallback") == ["skipped"]
    assert mail.outbox == []
    assert FallbackDelivery.objects.get(notification=n, channel="email").status == "skipped"


def test_a_muted_category_stays_out_of_anothers_batch(dana):
    CategoryPreference.objects.create(user=dana, category="marketing", muted_until=timezone.now() + timedelta(days=1))
    send([dana], category="marketing", title="Sale")
    send([dana], category="order", title="Shipped")
    time_passes(900)
    run_due()
    assert len(mail.outbox) == 1
    assert "Shipped" in mail.outbox[0].body and "Sale" not in mail.outbox[0].body


def test_a_critical_category_is_emailed_even_when_muted(dana):
    CategoryPreference.objects.create(user=dana, category="security", email=False, muted_until=timezone.now() + timedelta(days=1))
    send([dana], category="security", title="New sign-in")
    time_passes(900)
    run_due()
    assert [m.subject for m in mail.outbox] == ["New sign-in"]


def quiet_now(user, zone="Asia/Tokyo"):
    """Quiet hours for ``user`` from an hour ago to two hours ahead, in ``zone``."""
    import zoneinfo

    local = timezone.now().astimezone(zoneinfo.ZoneInfo(zone))
    start = (local - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (local + timedelta(hours=2)).time().replace(second=0, microsecond=0)
    DeliveryProfile.objects.create(user=user, time_zone=zone, quiet_start=start, quiet_end=end)
    return quiet_hours_end(preferences=preferences_for_user(user_id=user.pk))


def test_quiet_hours_postpone_the_email_until_they_end_then_it_is_sent(dana):
    ends = quiet_now(dana)
    assert ends is not None
    send([dana], title="Invoice")
    time_passes(900)
    assert outcomes(run_due(), "email_fallback") == ["postponed"]
    assert mail.outbox == []
    (later,) = scheduled("email_fallback")
    assert later.run_after == ends
    DeliveryProfile.objects.filter(user=dana).update(quiet_start=None, quiet_end=None)  # the night is over
    time_passes(3 * 3600)
    assert outcomes(run_due(), "email_fallback") == ["sent"]
    assert [m.subject for m in mail.outbox] == ["Invoice"]


def test_a_person_without_an_address_gets_no_email(make_user):
    nobody = make_user("no-address")
    send([nobody])
    time_passes(900)
    assert outcomes(run_due(), "email_fallback") == ["skipped"]
    assert mail.outbox == []


def test_an_external_recipients_address_is_used_before_the_accounts(dana):
    from inbox.models import ExternalRecipient

    ExternalRecipient.objects.create(user=dana, external_id="crm-42", email="dana@work.example", name="Dana")
    send([dana])
    time_passes(900)
    run_due()
    assert mail.outbox[0].to == ["dana@work.example"]
    assert mail.outbox[0].body.startswith("Hello Dana,")


def test_a_deleted_notification_cancels_its_fallbacks(dana):
    n = send([dana])[0]
    Notification.objects.filter(pk=n.pk).delete()
    time_passes(900)
    assert set(outcomes(run_due(), "email_fallback")) == {"gone"}
    assert mail.outbox == []


def test_by_default_the_schedule_is_written_off_the_senders_thread_and_flushed(transactional_db, dana, settings):
    import threading

    from inbox.fallback import scheduler

    settings.INBOX = {**settings.INBOX, "FALLBACK_SCHEDULE_IN_BACKGROUND": True}
    threads = []
    original = scheduler.insert_tasks

    def watched(entries):
        threads.append(threading.current_thread().name)
        original(entries)

    scheduler.insert_tasks = watched
    try:
        sent = [send([dana], title=f"n{i}")[0] for i in range(5)]
        assert scheduler.writer.flush(10)
    finally:
        scheduler.insert_tasks = original
    assert set(threads) == {"inbox-fallback-schedule"}
    assert scheduled_ids("email_fallbacks") == [n.pk for n in sent]
    assert len(scheduled("email_fallbacks")) == len(threads) <= 5  # the sends that arrived during an insert share the next


class WatchedInserts(list):
    """insert_tasks, recording when each insert happened and how many rows it wrote."""

    def __init__(self, scheduler):
        super().__init__()
        self.scheduler, self.original = scheduler, scheduler.insert_tasks

    def __enter__(self):
        def watched(entries):
            self.append((monotonic(), len(entries)))
            self.original(entries)

        self.scheduler.insert_tasks = watched
        return self

    def __exit__(self, *exc):
        self.scheduler.insert_tasks = self.original


def test_the_writer_gathers_the_sends_of_its_linger_into_one_insert(transactional_db, dana, settings):
    from inbox.fallback import scheduler

    settings.INBOX = {**settings.INBOX, "FALLBACK_SCHEDULE_IN_BACKGROUND": True, "FALLBACK_SCHEDULE_LINGER_SECONDS": 0.5}
    with WatchedInserts(scheduler) as inserts:
        started = monotonic()
        sent = [send([dana], title=f"n{i}")[0] for i in range(5)]
        deadline = monotonic() + 10
        while not inserts and monotonic() < deadline:
            sleep(0.02)
        sleep(0.3)  # a second insert, if any, would come now
        assert scheduler.writer.flush(10)
    assert [rows for _, rows in inserts] == [2]  # one row per channel for the five sends
    assert inserts[0][0] - started >= 0.45
    assert scheduled_ids("push_fallbacks") == [n.pk for n in sent]


def test_a_flush_writes_what_is_gathered_at_once_without_waiting_for_the_linger(transactional_db, dana, settings):
    from inbox.fallback import scheduler

    settings.INBOX = {**settings.INBOX, "FALLBACK_SCHEDULE_IN_BACKGROUND": True, "FALLBACK_SCHEDULE_LINGER_SECONDS": 60}
    with WatchedInserts(scheduler) as inserts:
        (n,) = send([dana])
        started = monotonic()
        assert scheduler.writer.flush(10)
        assert monotonic() - started < 5
    assert len(inserts) == 1
    assert scheduled_ids("email_fallbacks") == [n.pk]
