"""The policy read from preferences: switches, mutes, quiet hours in the person's zone, critical categories."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone as dt_timezone

import pytest

from inbox.models import CategoryPreference, DeliveryProfile
from inbox.preferences import Decision, Preferences, channel_decision, preferences_for_user, preferences_for_users, quiet_hours_end

UTC = dt_timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def night_owl(**kwargs) -> Preferences:
    """Quiet from 22:00 to 07:00 in Paris."""
    return Preferences(user_id=1, time_zone="Europe/Paris", quiet_start=time(22), quiet_end=time(7), **kwargs)


def test_a_person_without_preferences_gets_every_channel_at_once():
    for channel in ("in_app", "web_push", "email"):
        assert channel_decision(preferences=Preferences(user_id=1), category="order", channel=channel) == Decision(True)


def test_quiet_hours_that_wrap_midnight_hold_push_and_email_until_they_end_in_the_persons_zone():
    # 23:30 in Paris (winter, UTC+1) is 22:30 UTC: inside; they end at 07:00 Paris, 06:00 UTC next day.
    now = at("2026-01-15T22:30:00+00:00")
    for channel in ("web_push", "email"):
        decision = channel_decision(preferences=night_owl(), category="order", channel=channel, now=now)
        assert decision == Decision(False, "quiet_hours", at("2026-01-16T06:00:00+00:00"))
    # After midnight, still inside, the end is the same morning.
    assert quiet_hours_end(preferences=night_owl(), now=at("2026-01-16T03:00:00+00:00")) == at("2026-01-16T06:00:00+00:00")


def test_quiet_hours_never_hold_the_in_app_notification_back():
    now = at("2026-01-15T22:30:00+00:00")
    assert channel_decision(preferences=night_owl(), category="order", channel="in_app", now=now).allowed


def test_outside_quiet_hours_everything_goes_and_the_window_end_is_exclusive():
    assert channel_decision(preferences=night_owl(), category="order", channel="email", now=at("2026-01-15T12:00:00+00:00")).allowed
    # 07:00 Paris exactly is no longer quiet; 21:59 is not yet quiet.
    assert quiet_hours_end(preferences=night_owl(), now=at("2026-01-16T06:00:00+00:00")) is None
    assert quiet_hours_end(preferences=night_owl(), now=at("2026-01-15T20:59:00+00:00")) is None


def test_a_daytime_window_that_does_not_wrap_ends_the_same_day():
    lunch = Preferences(user_id=1, time_zone="America/New_York", quiet_start=time(12), quiet_end=time(13, 30))
    # 12:15 in New York in July (UTC-4) is 16:15 UTC; it ends at 17:30 UTC.
    assert quiet_hours_end(preferences=lunch, now=at("2026-07-01T16:15:00+00:00")) == at("2026-07-01T17:30:00+00:00")
    assert quiet_hours_end(preferences=lunch, now=at("2026-07-01T18:00:00+00:00")) is None


def test_quiet_hours_follow_daylight_saving_time():
    # The night Paris moves to summer time (29 March 2026): 07:00 local is then 05:00 UTC.
    assert quiet_hours_end(preferences=night_owl(), now=at("2026-03-28T23:00:00+00:00")) == at("2026-03-29T05:00:00+00:00")


def test_a_channel_turned_off_for_a_category_is_never_used_for_it_but_others_are():
    prefs = Preferences(user_id=1, categories={"marketing": _choice(email=False)})
    assert channel_decision(preferences=prefs, category="marketing", channel="email") == Decision(False, "off", None)
    assert channel_decision(preferences=prefs, category="marketing", channel="web_push").allowed
    assert channel_decision(preferences=prefs, category="order", channel="email").allowed


def test_a_muted_category_is_quiet_until_the_mute_ends_on_every_channel():
    now = at("2026-01-15T12:00:00+00:00")
    until = now + timedelta(hours=2)
    prefs = Preferences(user_id=1, categories={"order": _choice(muted_until=until)})
    for channel in ("in_app", "web_push", "email"):
        assert channel_decision(preferences=prefs, category="order", channel=channel, now=now) == Decision(False, "muted", until)
    assert channel_decision(preferences=prefs, category="order", channel="email", now=until + timedelta(seconds=1)).allowed


def test_a_critical_category_ignores_switches_mutes_and_quiet_hours(settings):
    settings.INBOX = {"CRITICAL_CATEGORIES": ["security"]}
    now = at("2026-01-15T22:30:00+00:00")
    prefs = night_owl(categories={"security": _choice(email=False, web_push=False, muted_until=now + timedelta(days=1))})
    for channel in ("in_app", "web_push", "email"):
        assert channel_decision(preferences=prefs, category="security", channel=channel, now=now).allowed


def test_an_unknown_channel_is_a_programming_error():
    with pytest.raises(ValueError):
        channel_decision(preferences=Preferences(user_id=1), category="order", channel="sms")


@pytest.mark.django_db
def test_stored_preferences_are_read_back_for_many_people_in_two_queries(make_user, django_assert_num_queries):
    alice, bob, carol = make_user(), make_user(), make_user()
    DeliveryProfile.objects.create(user=alice, time_zone="Asia/Tokyo", quiet_start=time(23), quiet_end=time(6))
    CategoryPreference.objects.create(user=alice, category="marketing", email=False)
    CategoryPreference.objects.create(user=bob, category="order", web_push=False)
    with django_assert_num_queries(2):
        found = preferences_for_users(user_ids=[alice.pk, bob.pk, carol.pk])
    assert found[alice.pk].time_zone == "Asia/Tokyo" and found[alice.pk].quiet_start == time(23)
    assert found[alice.pk].category("marketing").email is False
    assert found[bob.pk].category("order").web_push is False and found[bob.pk].time_zone == "UTC"
    assert found[carol.pk] == Preferences(user_id=carol.pk)
    assert preferences_for_user(user_id=carol.pk) == Preferences(user_id=carol.pk)


def _choice(**kwargs):
    from inbox.preferences import CategoryChoice

    return CategoryChoice(**kwargs)
