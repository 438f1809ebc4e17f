"""The durable schedule: what a send schedules, what an ack, a read, a preference or quiet hours do to it."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from inbox import services
from inbox.models import CategoryPreference, DeliveryProfile, FallbackDelivery, Notification
from inbox.preferences import preferences_for_user, quiet_hours_end

from .support import outcomes, run_due, scheduled, send, time_passes

pytestmark = pytest.mark.django_db


@pytest.fixture
def dana(make_user):
    user = make_user("dana")
    user.email = "dana@example.com"
    user.save()
    return user


def test_a_send_schedules_one_push_and_one_email_per_notification_at_their_delays(dana, make_user):
    erin = make_user("erin")
    before = timezone.now()
    sent = send([dana, erin], title="Build failed")
    pushes, emails = scheduled("push_fallback"), scheduled("email_fallback")
    assert sorted(r.args_kwargs["kwargs"]["notification_id"] for r in pushes) == sorted(n.pk for n in sent)
    assert sorted(r.args_kwargs["kwargs"]["notification_id"] for r in emails) == sorted(n.pk for n in sent)
    for r in pushes:
        assert before + timedelta(seconds=30) <= r.run_after <= timezone.now() + timedelta(seconds=30)
    for r in emails:
        assert before + timedelta(seconds=900) <= r.run_after <= timezone.now() + timedelta(seconds=900)


def test_each_category_may_have_its_own_delays(dana, settings):
    settings.INBOX = {**settings.INBOX, "PUSH_AFTER_SECONDS_BY_CATEGORY": {"chat": 5}, "EMAIL_AFTER_SECONDS_BY_CATEGORY": {"chat": 120}}
    n = send([dana], category="chat")[0]
    assert scheduled("push_fallback")[0].run_after == n.created_at + timedelta(seconds=5)
    assert scheduled("email_fallback")[0].run_after == n.created_at + timedelta(seconds=120)


def test_a_ten_thousand_recipient_send_is_scheduled_in_a_few_bulk_inserts_not_a_round_trip_each(make_user):
    User = get_user_model()
    User.objects.bulk_create([User(username=f"bulk-{i}", password="!") for i in range(10_000)])
    recipients = list(User.objects.filter(username__startswith="bulk-"))
    with CaptureQueriesContext(connection) as queries:
        sent = send(recipients, title="Maintenance tonight")
    inserts = [q["sql"] for q in queries.captured_queries if "INSERT INTO" in q["sql"] and "dbtaskresult" in q["sql"]]
    assert len(sent) == 10_000
    from django_tasks_db.models import DBTaskResult

    assert DBTaskResult.objects.filter(status="READY").count() == 20_000
    assert 1 <= len(inserts) <= 10  # 4,000 rows a statement (fewer on SQLite's variable limit)


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
    assert sorted(r.args_kwargs["kwargs"]["notification_id"] for r in scheduled("email_fallback")) == [n.pk for n in sent]
