"""
POST <id>/read/, <id>/unread/, /api/notifications/read-all/, and the rule that a user can never see,
read, unread, change or delete another user's notification (404, whatever the endpoint or filter).
"""

import pytest
from django.utils import timezone

from inbox.models import Notification
from tests.factories import make_notification


def test_a_user_marks_a_notification_read(alice_client, alice):
    n = make_notification(alice)
    response = alice_client.post(f"/api/notifications/{n.id}/read/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == n.id
    assert body["state"] == "read"
    assert body["read_at"] is not None
    n.refresh_from_db()
    assert n.read_at is not None


def test_marking_read_twice_keeps_the_first_read_time(alice_client, alice):
    n = make_notification(alice)
    first = alice_client.post(f"/api/notifications/{n.id}/read/").json()["read_at"]
    second = alice_client.post(f"/api/notifications/{n.id}/read/").json()["read_at"]
    assert first == second


def test_a_user_marks_a_notification_unread(alice_client, alice):
    n = make_notification(alice, read_at=timezone.now(), delivered_at=timezone.now())
    response = alice_client.post(f"/api/notifications/{n.id}/unread/")
    assert response.status_code == 200
    assert response.json()["read_at"] is None
    assert response.json()["state"] == "delivered"
    n.refresh_from_db()
    assert n.read_at is None


def test_read_all_marks_every_unread_notification_read(alice_client, alice):
    for _ in range(3):
        make_notification(alice)
    make_notification(alice, read_at=timezone.now())
    response = alice_client.post("/api/notifications/read-all/")
    assert response.status_code == 200
    assert response.json() == {"updated": 3, "unread": 0}
    assert not Notification.objects.filter(read_at__isnull=True).exists()


def test_read_all_accepts_an_empty_json_object(alice_client, alice):
    make_notification(alice)
    response = alice_client.post("/api/notifications/read-all/", {}, format="json")
    assert response.json() == {"updated": 1, "unread": 0}


def test_read_all_can_be_limited_to_one_category(alice_client, alice):
    make_notification(alice, category="billing")
    make_notification(alice, category="billing")
    social = make_notification(alice, category="social")
    response = alice_client.post("/api/notifications/read-all/", {"category": "billing"}, format="json")
    assert response.json() == {"updated": 2, "unread": 1}
    assert list(Notification.objects.filter(read_at__isnull=True).values_list("id", flat=True)) == [social.id]


@pytest.mark.parametrize("body", [{"category": "not a slug!"}, {"category": ["billing"]}, {"category": None}, {"category": "x" * 51}, [1, 2]])
def test_read_all_refuses_a_bad_category(alice_client, alice, body):
    make_notification(alice)
    response = alice_client.post("/api/notifications/read-all/", body, format="json")
    assert response.status_code == 400
    assert Notification.objects.filter(read_at__isnull=True).count() == 1


# --- Another user's notifications -------------------------------------------------------------


@pytest.fixture
def bobs(bob):
    return make_notification(bob, title="Bob's secret", category="billing")


@pytest.mark.parametrize(
    "method,suffix",
    [("get", ""), ("delete", ""), ("post", "read/"), ("post", "unread/")],
)
def test_a_user_cannot_touch_another_users_notification(alice_client, alice, bobs, method, suffix):
    response = getattr(alice_client, method)(f"/api/notifications/{bobs.id}/{suffix}")
    assert response.status_code == 404
    assert "secret" not in response.content.decode()
    bobs.refresh_from_db()
    assert bobs.read_at is None


def test_a_user_cannot_unread_another_users_read_notification(alice_client, alice, bob):
    read = make_notification(bob, read_at=timezone.now())
    assert alice_client.post(f"/api/notifications/{read.id}/unread/").status_code == 404
    read.refresh_from_db()
    assert read.read_at is not None


@pytest.mark.parametrize(
    "query",
    ["", "?unread=true", "?unread=false", "?category=billing", "?after=0", "?after=0&category=billing", "?page_size=200"],
)
def test_a_user_never_lists_another_users_notifications(alice_client, alice, bob, bobs, query):
    make_notification(bob, read_at=timezone.now(), category="billing")
    mine = make_notification(alice, category="billing")
    results = alice_client.get(f"/api/notifications/{query}").json()["results"]
    assert {n["recipient"] for n in results} <= {alice.pk}
    assert bobs.id not in [n["id"] for n in results]
    assert mine.id in [n["id"] for n in results] or query == "?unread=false"


def test_another_users_notifications_are_not_counted(alice_client, alice, bobs):
    assert alice_client.get("/api/notifications/unread-count/").json() == {"unread": 0}


def test_read_all_leaves_another_users_notifications_alone(alice_client, alice, bobs):
    make_notification(alice, category="billing")
    assert alice_client.post("/api/notifications/read-all/").json() == {"updated": 1, "unread": 0}
    assert alice_client.post("/api/notifications/read-all/", {"category": "billing"}, format="json").json()["updated"] == 0
    bobs.refresh_from_db()
    assert bobs.read_at is None


def test_a_cursor_cannot_reach_another_users_notifications(alice_client, bob_client, alice, bob):
    from tests.factories import make_notifications

    make_notifications(bob, 5)
    make_notifications(alice, 3)
    bobs_next = bob_client.get("/api/notifications/?page_size=2").json()["next"]
    results = alice_client.get(bobs_next).json()["results"]
    assert {n["recipient"] for n in results} <= {alice.pk}


def test_reading_a_notification_also_marks_it_delivered(alice_client, alice):
    from inbox.models import Notification
    from tests.factories import make_notification

    n = make_notification(alice)
    assert alice_client.post(f"/api/notifications/{n.id}/read/").status_code == 200
    n = Notification.objects.get(pk=n.id)
    assert n.delivered_at is not None and n.read_at is not None
    assert n.delivered_at <= n.read_at
