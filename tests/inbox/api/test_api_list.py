"""GET /api/notifications/ (own only, newest first, cursor pages, filters), GET /api/notifications/<id>/, unread-count."""

from datetime import timedelta

from django.utils import timezone

from inbox.models import Notification
from tests.factories import make_expired_notification, make_notification, make_notifications


def ids_of(response) -> list[int]:
    return [n["id"] for n in response.json()["results"]]


def test_a_user_lists_only_their_own_notifications_newest_first(alice_client, alice, bob):
    mine = [make_notification(alice, title=f"a{i}") for i in range(3)]
    make_notification(bob, title="not yours")
    response = alice_client.get("/api/notifications/")
    assert response.status_code == 200
    assert ids_of(response) == [n.id for n in reversed(mine)]
    assert {n["recipient"] for n in response.json()["results"]} == {alice.pk}


def test_a_listed_notification_has_every_field(alice_client, alice, service_account):
    n = make_notification(
        alice,
        sender=service_account,
        title="Invoice paid",
        message="Thanks",
        category="billing",
        data={"invoice": 42},
        link="https://example.com/i/42",
    )
    (item,) = alice_client.get("/api/notifications/").json()["results"]
    assert item == {
        "id": n.id,
        "recipient": alice.pk,
        "sender": "billing-service",
        "category": "billing",
        "title": "Invoice paid",
        "message": "Thanks",
        "data": {"invoice": 42},
        "link": "https://example.com/i/42",
        "created_at": item["created_at"],
        "delivered_at": None,
        "read_at": None,
        "expires_at": None,
        "state": "pending",
        # The feed's fields (issue 21).
        "key": "",
        "group": "",
        "actions": [],
        "seen_at": None,
        "archived_at": None,
        "interacted_at": None,
    }
    assert item["created_at"].endswith("Z")


def test_the_list_is_cursor_paginated_with_page_size(alice_client, alice):
    created = make_notifications(alice, 7)
    newest_first = [n.id for n in reversed(created)]
    seen, url = [], "/api/notifications/?page_size=3"
    pages = 0
    while url:
        body = alice_client.get(url).json()
        assert len(body["results"]) <= 3
        seen += [n["id"] for n in body["results"]]
        url = body["next"]
        pages += 1
    assert seen == newest_first
    assert pages == 3


def test_the_previous_link_goes_back_a_page(alice_client, alice):
    created = make_notifications(alice, 5)
    first = alice_client.get("/api/notifications/?page_size=2").json()
    second = alice_client.get(first["next"]).json()
    back = alice_client.get(second["previous"]).json()
    assert [n["id"] for n in back["results"]] == [n["id"] for n in first["results"]] == [created[4].id, created[3].id]


def test_page_size_is_capped_at_200(alice_client, alice):
    make_notifications(alice, 205)
    assert len(alice_client.get("/api/notifications/?page_size=1000").json()["results"]) == 200
    assert len(alice_client.get("/api/notifications/").json()["results"]) == 50


def test_a_bad_page_size_falls_back_to_the_default(alice_client, alice):
    make_notifications(alice, 60)
    for bad in ("0", "-3", "abc", "1.5", "%C2%B2"):
        response = alice_client.get(f"/api/notifications/?page_size={bad}")
        assert response.status_code == 200
        assert len(response.json()["results"]) == 50
    huge = alice_client.get("/api/notifications/?page_size=99999999999999999999999")
    assert len(huge.json()["results"]) == 60


def test_the_unread_filter(alice_client, alice):
    unread = make_notification(alice)
    read = make_notification(alice, read_at=timezone.now())
    assert ids_of(alice_client.get("/api/notifications/?unread=true")) == [unread.id]
    assert ids_of(alice_client.get("/api/notifications/?unread=false")) == [read.id]
    assert ids_of(alice_client.get("/api/notifications/?unread=")) == [read.id, unread.id]


def test_the_category_filter(alice_client, alice):
    billing = make_notification(alice, category="billing")
    make_notification(alice, category="social")
    assert ids_of(alice_client.get("/api/notifications/?category=billing")) == [billing.id]
    assert ids_of(alice_client.get("/api/notifications/?category=nothing")) == []


def test_filters_combine(alice_client, alice):
    target = make_notification(alice, category="billing")
    make_notification(alice, category="billing", read_at=timezone.now())
    make_notification(alice, category="social")
    assert ids_of(alice_client.get("/api/notifications/?category=billing&unread=true")) == [target.id]


def test_after_returns_strictly_newer_notifications_oldest_first(alice_client, alice):
    created = make_notifications(alice, 5)
    response = alice_client.get(f"/api/notifications/?after={created[1].id}")
    assert ids_of(response) == [n.id for n in created[2:]]


def test_after_pages_oldest_first_too(alice_client, alice):
    created = make_notifications(alice, 5)
    first = alice_client.get(f"/api/notifications/?after={created[0].id}&page_size=2").json()
    second = alice_client.get(first["next"]).json()
    assert [n["id"] for n in first["results"] + second["results"]] == [n.id for n in created[1:5]]


def test_after_the_newest_id_is_empty(alice_client, alice):
    created = make_notifications(alice, 2)
    assert ids_of(alice_client.get(f"/api/notifications/?after={created[-1].id}")) == []
    assert ids_of(alice_client.get("/api/notifications/?after=0")) == [n.id for n in created]


def test_after_combines_with_unread_and_category(alice_client, alice):
    base = make_notification(alice)
    a = make_notification(alice, category="billing")
    make_notification(alice, category="billing", read_at=timezone.now())
    make_notification(alice, category="social")
    assert ids_of(alice_client.get(f"/api/notifications/?after={base.id}&category=billing&unread=true")) == [a.id]


def test_expired_notifications_are_not_listed(alice_client, alice):
    live = make_notification(alice, expires_at=timezone.now() + timedelta(hours=1))
    make_expired_notification(alice)
    forever = make_notification(alice)
    assert ids_of(alice_client.get("/api/notifications/")) == [forever.id, live.id]
    assert ids_of(alice_client.get("/api/notifications/?after=0")) == [live.id, forever.id]
    assert ids_of(alice_client.get("/api/notifications/?unread=true")) == [forever.id, live.id]


def test_expired_notifications_are_not_counted(alice_client, alice):
    make_notification(alice)
    make_expired_notification(alice)
    make_notification(alice, expires_at=timezone.now() + timedelta(hours=1))
    assert alice_client.get("/api/notifications/unread-count/").json() == {"unread": 2}


def test_the_unread_count(alice_client, alice, bob):
    make_notifications(alice, 3)
    make_notification(alice, read_at=timezone.now())
    make_notifications(bob, 5)
    response = alice_client.get("/api/notifications/unread-count/")
    assert response.status_code == 200
    assert response.json() == {"unread": 3}


def test_a_user_gets_one_of_their_notifications(alice_client, alice):
    n = make_notification(alice, title="Hello")
    response = alice_client.get(f"/api/notifications/{n.id}/")
    assert response.status_code == 200
    assert response.json()["title"] == "Hello"
    assert response.json()["id"] == n.id


def test_a_missing_notification_is_404(alice_client, alice):
    assert alice_client.get("/api/notifications/999999/").status_code == 404


def test_a_user_deletes_one_of_their_notifications(alice_client, alice):
    n = make_notification(alice)
    keep = make_notification(alice)
    assert alice_client.delete(f"/api/notifications/{n.id}/").status_code == 204
    assert list(Notification.objects.values_list("id", flat=True)) == [keep.id]
    assert alice_client.delete(f"/api/notifications/{n.id}/").status_code == 404


def test_listing_takes_a_constant_number_of_queries(alice_client, alice, service_account, django_assert_max_num_queries):
    make_notifications(alice, 3, sender=service_account)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        alice_client.get("/api/notifications/")
    make_notifications(alice, 100, sender=service_account)
    with django_assert_max_num_queries(len(few)):
        assert len(alice_client.get("/api/notifications/").json()["results"]) == 50


def test_an_expired_notification_is_not_found_by_its_id(alice_client, alice):
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import make_notification

    n = make_notification(alice, expires_at=timezone.now() - timedelta(seconds=1))
    assert alice_client.get(f"/api/notifications/{n.id}/").status_code == 404
