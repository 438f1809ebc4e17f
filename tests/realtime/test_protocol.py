"""
realtime.protocol: the wire contract. Every rendering of notification.created is the same frame,
byte for byte; client frames are checked as documented; close codes are those the client knows.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from django.utils import timezone

from inbox import services
from inbox.payloads import notification_payload
import realtime
from realtime import protocol, publisher
from realtime.protocol import FrameError

from tests.factories import make_notifications


@pytest.fixture
def published(monkeypatch):
    """What the WebSocket backend publishes, instead of sending it."""
    events: list[publisher.Event] = []
    monkeypatch.setattr(publisher, "publish", events.extend)
    return events


def one_by_one(created, unread: dict[int, int]) -> list[publisher.Event]:
    """The events of these notifications rendered each on its own, as for a stored one (admin, shell)."""
    return [(n.recipient_id, protocol.created_message(notification_payload(n), unread[n.recipient_id])) for n in created]


def test_a_sends_frames_are_byte_for_byte_those_of_its_notifications_rendered_one_by_one(published, alice, bob, service_account, django_capture_on_commit_callbacks):
    """A send renders what its notifications share once; the frames must not differ from a row's own."""
    make_notifications(bob, 2)
    with django_capture_on_commit_callbacks(execute=True):
        created = services.notification_create(
            recipients=[alice, bob], sender=service_account, category="billing", link="https://example.com/i/42",
            title='Ünïcode "quoted" \\ \u2028 <b>', message="line\nbreak\ttab",
            data={"invoice": {"id": 42, "lines": [1.5, None, True, -7]}, "emoji": "🎉", "empty": {}},
            expires_at=timezone.now() + timedelta(days=1),
        )
    assert published == one_by_one(created, {alice.pk: 1, bob.pk: 3})


def test_a_send_without_sender_data_or_expiry_renders_the_same_frames_too(published, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        created = services.notification_create(recipients=[alice], title="plain")
    assert published == one_by_one(created, {alice.pk: 1})
    assert orjson.loads(published[0][1]["frame"])["notification"]["sender"] is None


def test_a_catch_up_frame_is_the_live_frame_marked_catchup():
    payload = {"id": 7, "recipient": 3, "title": "t\u00e9"}
    live = orjson.loads(protocol.created_message(payload, 2)["frame"])
    assert orjson.loads(protocol.catchup_frame(payload, 2)) == {**live, "catchup": True}


def test_a_stored_rows_message_carries_its_id_and_marks_a_resend():
    payload = {"id": 7, "recipient": 3}
    assert protocol.created_message(payload, 1) == {
        "type": "notification.created", "id": 7, "frame": '{"type":"notification.created","notification":{"id":7,"recipient":3},"unread":1,"seq":7}'
    }
    assert protocol.created_message(payload, 1, resend=True)["resend"] is True


def test_the_other_server_frames():
    assert protocol.read_message(ids=[1, 2], read=False, unread=4, seq=11) == {
        "type": "notification.read", "seq": 11, "frame": '{"type":"notification.read","ids":[1,2],"read":false,"unread":4,"seq":11}'
    }
    assert protocol.deleted_message(ids=[5], unread=0, seq=12, reason="retracted") == {
        "type": "notification.deleted", "seq": 12,
        "frame": '{"type":"notification.deleted","ids":[5],"unread":0,"seq":12,"reason":"retracted"}',
    }
    assert orjson.loads(protocol.sync_done_frame(last_id=9, unread=1, more=False, seq=13)) == {
        "type": "sync.done", "last_id": 9, "unread": 1, "more": False, "seq": 13
    }
    assert orjson.loads(protocol.sync_reset_frame(seq=13, floor=10, unread=1)) == {"type": "sync.reset", "seq": 13, "floor": 10, "unread": 1}
    assert orjson.loads(protocol.error_frame("invalid_ids", "No.")) == {"type": "error", "code": "invalid_ids", "detail": "No."}
    assert orjson.loads(protocol.pong_frame()) == {"type": "pong"}


def test_the_close_codes_are_the_documented_ones():
    assert (
        protocol.CLOSE_UNAUTHORIZED, protocol.CLOSE_BAD_REQUEST, protocol.CLOSE_RATE_LIMITED, protocol.CLOSE_TOO_BIG,
        protocol.CLOSE_LAYER_FAILED, protocol.CLOSE_SERVICE_RESTART, protocol.CLOSE_TRY_AGAIN_LATER,
    ) == (4401, 4400, 4429, 1009, 1011, 1012, 1013)


def test_the_browser_client_knows_the_application_close_codes():
    client = (Path(realtime.__file__).parent.parent / "inbox" / "static" / "inbox" / "inbox-client.js").read_text()
    for name in ("CLOSE_BAD_REQUEST", "CLOSE_UNAUTHORIZED", "CLOSE_RATE_LIMITED"):
        assert f"const {name} = {getattr(protocol, name)};" in client


def test_ids_of_a_frame_are_sorted_unique_positive_and_bounded(settings):
    assert protocol.parse_ids({"ids": [3, 1, 3]}) == [1, 3]
    for bad in ({}, {"ids": []}, {"ids": "1"}, {"ids": [0]}, {"ids": [True]}, {"ids": [protocol.MAX_ID + 1]}, {"ids": [1.0]}):
        with pytest.raises(FrameError) as error:
            protocol.parse_ids(bad)
        assert error.value.code == "invalid_ids"
    settings.INBOX = {**settings.INBOX, "MAX_IDS_PER_REQUEST": 2}
    with pytest.raises(FrameError) as error:
        protocol.parse_ids({"ids": [1, 2, 3]})
    assert error.value.code == "too_many_ids"


def test_an_after_is_an_integer_between_zero_and_max_id():
    assert protocol.parse_id(0) == 0 and protocol.parse_id(protocol.MAX_ID) == protocol.MAX_ID
    assert protocol.parse_after_param("12") == 12
    for bad in (-1, protocol.MAX_ID + 1, True, "1", None):
        with pytest.raises(FrameError, match="'after' must be an integer"):
            protocol.parse_id(bad)
    for raw in ("-1", "x", str(protocol.MAX_ID + 1), ""):
        with pytest.raises(FrameError) as error:
            protocol.parse_after_param(raw)
        assert error.value.code == "invalid_after"


def test_a_read_all_category_is_a_short_string_without_nul():
    assert protocol.parse_category({}) is None
    assert protocol.parse_category({"category": ""}) is None
    assert protocol.parse_category({"category": "billing"}) == "billing"
    for bad in (7, "x" * 51, "a\x00b"):
        with pytest.raises(FrameError) as error:
            protocol.parse_category({"category": bad})
        assert error.value.code == "invalid_category"


def test_a_message_of_the_earlier_version_is_rendered_as_that_version_did():
    created = {"type": "notification.created", "notification": {"id": 4}, "unread": 1, "resend": True, "__asgi_channel__": ["x"]}
    assert protocol.with_frame(created) == {
        "frame": '{"type":"notification.created","notification":{"id":4},"unread":1}', "resend": True, "id": 4
    }
    read = {"type": "notification.read", "ids": [4], "read": True, "unread": 0}
    assert protocol.with_frame(read) == {"frame": '{"type":"notification.read","ids":[4],"read":true,"unread":0}', "resend": False}
