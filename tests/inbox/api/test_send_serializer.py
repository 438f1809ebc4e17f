"""Sends of one thread share the send serializer's fields, never its errors or validated data."""

import threading

import pytest

from inbox.api.serializers import NotificationSendSerializer, send_serializer

BAD_SENDS = [
    {"title": "no recipient"},
    {"recipient": "alice", "recipients": ["bob"], "title": "both"},
    {"recipient": "nobody-here", "title": "unknown"},
    {"recipients": [], "title": "empty list"},
    {"recipient": True, "title": "a boolean"},
    {"recipient": "alice", "title": ""},
    {"recipient": "alice", "title": "x" * 5000},
    {"recipient": "alice", "title": "t", "category": "not a slug!"},
    {"recipient": "alice", "title": "t", "data": [1, 2]},
    {"recipient": "alice", "title": "t", "link": "not a url"},
    {"recipient": "alice", "title": "t", "expires_at": "2001-01-01T00:00:00Z"},
    {"recipient": "alice", "title": "t", "expires_at": "tomorrow"},
]


@pytest.fixture
def users(alice, bob):
    return alice, bob


@pytest.mark.parametrize("body", BAD_SENDS, ids=lambda b: next(iter(b.values())) if len(b) == 1 else b.get("title", "")[:20])
def test_a_bad_send_after_a_good_one_gets_the_errors_of_a_fresh_serializer(users, body):
    good = send_serializer({"recipient": "alice", "title": "fine"})
    assert good.is_valid()
    shared = send_serializer(body)
    fresh = NotificationSendSerializer(data=body)
    assert not shared.is_valid()
    assert not fresh.is_valid()
    assert shared.errors == fresh.errors
    assert good.errors == {}
    assert [r.pk for r in good.validated_data["recipient_users"]] == [users[0].pk]


def test_a_good_send_after_a_bad_one_is_valid_with_its_own_data(users):
    bad = send_serializer({"recipient": "alice", "title": ""})
    assert not bad.is_valid()
    good = send_serializer({"recipients": ["alice", "bob"], "title": "both of you", "category": "team"})
    assert good.is_valid(), good.errors
    assert [r.pk for r in good.validated_data["recipient_users"]] == [u.pk for u in users]
    assert good.validated_data["category"] == "team"
    assert good.fields is bad.fields  # built once per thread
    assert "title" in bad.errors


def test_each_thread_builds_its_own_fields(users):
    mine = send_serializer({"recipient": "alice", "title": "t"})
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(send_serializer({"recipient": "bob", "title": "t"})))
    thread.start()
    thread.join()
    assert theirs[0].fields is not mine.fields
    assert theirs[0].fields["title"] is not mine.fields["title"]
