"""
A lost database is a 503 with Retry-After, never a 500. Here the selectors and services raise the
OperationalError a dropped connection raises; a real PostgreSQL restart is tested end to end elsewhere.
"""

import pytest
from django.db import InterfaceError, OperationalError

from inbox import selectors, services
from tests.factories import make_notification


def _down(*args, **kwargs):
    raise OperationalError("server closed the connection unexpectedly")


def assert_503(response):
    assert response.status_code == 503, (response.status_code, response.content[:300])
    assert response["Retry-After"] == "5"
    assert "database" in response.json()["detail"]


@pytest.mark.parametrize(
    "name,method,url",
    [
        ("notification_list_for_user", "get", "/api/notifications/"),
        ("notification_unread_count", "get", "/api/notifications/unread-count/"),
        ("notification_get_for_user", "get", "/api/notifications/1/"),
        ("notification_get_for_user", "post", "/api/notifications/1/read/"),
        ("notification_get_for_user", "delete", "/api/notifications/1/"),
    ],
)
def test_a_selector_losing_the_database_gives_503(alice_api, monkeypatch, name, method, url):
    monkeypatch.setattr(selectors, name, _down)
    assert_503(getattr(alice_api, method)(url))


def test_a_send_losing_the_database_gives_503(sender_api, alice, monkeypatch):
    monkeypatch.setattr(services, "notification_create", _down)
    assert_503(sender_api.post("/api/notifications/", {"recipient": "alice", "title": "T"}, format="json"))


def test_read_all_losing_the_database_gives_503(alice_api, monkeypatch):
    monkeypatch.setattr(services, "notification_mark_all_read", _down)
    assert_503(alice_api.post("/api/notifications/read-all/"))


def test_an_interface_error_also_gives_503(alice_api, monkeypatch):
    def closed(*args, **kwargs):
        raise InterfaceError("connection already closed")

    monkeypatch.setattr(selectors, "notification_list_for_user", closed)
    assert_503(alice_api.get("/api/notifications/"))


def test_a_page_outside_the_api_losing_the_database_gives_503(client, staff_user, alice, monkeypatch):
    from inbox.admin import NotificationAdmin

    make_notification(alice)
    client.raise_request_exception = False
    client.force_login(staff_user)
    monkeypatch.setattr(NotificationAdmin, "get_queryset", _down)
    response = client.get("/admin/inbox/notification/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"


def test_the_health_check_says_503_when_the_database_is_gone(client, db, monkeypatch):
    from django.db import connection

    def broken_cursor(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(connection, "cursor", broken_cursor)
    try:
        response = client.get("/healthz")
    finally:
        monkeypatch.undo()  # the test database's teardown needs the real cursor
    assert response.status_code == 503
    assert response.json() == {"status": "database unavailable"}
