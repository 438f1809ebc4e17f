"""The operators' admin of preferences, subscriptions and what the fallbacks sent (inbox/admin.py)."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from django.apps import apps
from django.contrib import admin
from django.utils import timezone

from inbox.models import CategoryPreference, DeliveryProfile, FallbackDelivery, PushSubscription

from .support import send

PAGES = {
    DeliveryProfile: "/admin/inbox/deliveryprofile/",
    CategoryPreference: "/admin/inbox/categorypreference/",
    FallbackDelivery: "/admin/inbox/fallbackdelivery/",
    PushSubscription: "/admin/inbox/pushsubscription/",
}


@pytest.fixture
def operator_client(client, staff_user):
    client.force_login(staff_user)
    client.raise_request_exception = False
    return client


def _rows(make_user, n: int) -> None:
    """n people, each with a profile, a category preference, a subscription and a fallback record."""
    for i in range(n):
        user = make_user(f"person-{n}-{i}")
        DeliveryProfile.objects.create(user=user, time_zone="Europe/Paris", quiet_start=time(22), quiet_end=time(7))
        CategoryPreference.objects.create(user=user, category="order", email=False)
        PushSubscription.objects.create(user=user, endpoint=f"https://fcm.googleapis.com/fcm/send/{n}-{i}", p256dh="k" * 87, auth="a" * 22)
        notification = send([user], title=f"Hello {i}")[0]
        FallbackDelivery.objects.create(notification=notification, channel="email", status="sent", sent_at=timezone.now())


@pytest.mark.parametrize("model", list(PAGES))
def test_each_changelist_lists_its_rows_with_usernames(operator_client, make_user, model):
    _rows(make_user, 2)
    response = operator_client.get(PAGES[model])
    assert response.status_code == 200
    assert b"person-2-0" in response.content and b"person-2-1" in response.content


def test_every_registered_changelist_runs_the_same_handful_of_queries_for_3_rows_as_for_30(
    operator_client, make_user, django_assert_max_num_queries
):
    """Each model admin registered (inbox's, the keys', Django's users and groups): no query per row."""
    _rows(make_user, 3)
    few = {}
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    registered = [m for m in apps.get_models() if admin.site.is_registered(m)]
    assert set(PAGES) <= set(registered)
    for model in registered:
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        with CaptureQueriesContext(connection) as queries:
            assert operator_client.get(url).status_code == 200, url
        few[url] = len(queries)
    _rows(make_user, 30)
    for url, count in few.items():
        with django_assert_max_num_queries(count, info=url):
            assert operator_client.get(url).status_code == 200


@pytest.mark.parametrize("url", [f"{page}?q=%00" for page in PAGES.values()] + [
    "/admin/inbox/categorypreference/?category=%00",
    "/admin/inbox/fallbackdelivery/?status=%00",
    "/admin/inbox/fallbackdelivery/?channel=a%00",
])
def test_a_nul_in_a_filter_or_search_is_a_400(operator_client, url):
    response = operator_client.get(url)
    assert response.status_code == 400 and b"NUL" in response.content


def test_what_the_fallbacks_sent_is_a_record_nobody_adds_edits_or_deletes(operator_client, make_user):
    _rows(make_user, 1)
    record = FallbackDelivery.objects.get()
    assert operator_client.get(f"{PAGES[FallbackDelivery]}add/").status_code == 403
    assert operator_client.get(f"{PAGES[FallbackDelivery]}{record.pk}/change/").status_code == 200  # viewable
    r = operator_client.post(f"{PAGES[FallbackDelivery]}{record.pk}/change/", {"status": "failed"})
    assert r.status_code == 403
    r = operator_client.post(PAGES[FallbackDelivery], {"action": "delete_selected", "_selected_action": [str(record.pk)], "post": "yes"})
    assert FallbackDelivery.objects.get(pk=record.pk).status == "sent"


def test_an_operator_removes_a_subscription_but_cannot_make_one(operator_client, make_user):
    _rows(make_user, 1)
    s = PushSubscription.objects.get()
    assert operator_client.get(f"{PAGES[PushSubscription]}add/").status_code == 403
    r = operator_client.post(f"{PAGES[PushSubscription]}{s.pk}/delete/", {"post": "yes"})
    assert r.status_code == 302 and not PushSubscription.objects.exists()


def test_the_admin_cannot_turn_off_or_mute_a_critical_category(operator_client, alice):
    url = f"{PAGES[CategoryPreference]}add/"
    base = {"user": alice.pk, "in_app": "on", "web_push": "on", "email": "on"}
    r = operator_client.post(url, {**base, "category": "security", "email": ""})
    assert r.status_code == 200 and "critical category" in r.content.decode()
    later = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%d")
    r = operator_client.post(url, {**base, "category": "security", "muted_until_0": later, "muted_until_1": "10:00:00"})
    assert r.status_code == 200 and "critical category" in r.content.decode()
    assert not CategoryPreference.objects.exists()
    r = operator_client.post(url, {**base, "category": "marketing", "email": ""})
    assert r.status_code == 302
    assert CategoryPreference.objects.get(user=alice, category="marketing").email is False


def test_the_admin_checks_a_profiles_time_zone_and_quiet_hours(operator_client, alice):
    url = f"{PAGES[DeliveryProfile]}add/"
    for bad in (
        {"time_zone": "Mars/Olympus"},
        {"time_zone": "UTC", "quiet_start": "22:00"},
        {"time_zone": "UTC", "quiet_start": "22:00", "quiet_end": "22:00"},
    ):
        r = operator_client.post(url, {"user": alice.pk, **bad})
        assert r.status_code == 200 and r.context["adminform"].form.errors, bad
    assert not DeliveryProfile.objects.exists()
    r = operator_client.post(url, {"user": alice.pk, "time_zone": "Asia/Tokyo", "quiet_start": "22:00", "quiet_end": "07:00"})
    assert r.status_code == 302
    assert DeliveryProfile.objects.get(user=alice).time_zone == "Asia/Tokyo"
