"""
realtime.fanout: how events leave the process. One pipelined group_send_many call per batch, the
publisher on the server loop (bind_loop, queue, drain), and never an exception when Redis is down
or hanging. (Which service sends how many events is counted in tests/inbox/test_fanout_calls.py.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from datetime import timedelta

import orjson
import pytest
from channels.layers import channel_layers
from django.utils import timezone

from inbox import services
from inbox.models import Notification
from inbox.payloads import notification_payload
from realtime import fanout

from . import recording_layer
from tests import services as ext
from tests.factories import make_notifications


@pytest.fixture
def calls(settings, redis_url):
    """The production layer on the real Redis, recording each send call fan-out makes."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "tests.realtime.recording_layer.RecordingLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": f"test-{uuid.uuid4().hex[:8]}"},
        }
    }
    channel_layers.backends.clear()
    recording_layer.CALLS.clear()
    yield recording_layer.CALLS
    recording_layer.CALLS.clear()


@pytest.fixture
def dead_redis(settings):
    """A layer pointing at a port where nothing listens."""
    port = ext.free_port()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.BatchingRedisChannelLayer",
            "CONFIG": {"hosts": [{"address": f"redis://127.0.0.1:{port}/0", "socket_connect_timeout": 1}]},
        }
    }
    settings.REALTIME = {**settings.REALTIME, "SEND_TIMEOUT": 1.0}
    channel_layers.backends.clear()


@pytest.fixture
def hanging_redis(settings):
    """A layer pointing at a server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted = []
    stop = threading.Event()

    def accept_forever():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.BatchingRedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{listener.getsockname()[1]}/0"]},
        }
    }
    settings.REALTIME = {**settings.REALTIME, "SEND_TIMEOUT": 0.5}
    channel_layers.backends.clear()
    yield
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    listener.close()


def read_event(user_id: int, ids=(1,)) -> fanout.Event:
    frame = orjson.dumps({"type": fanout.NOTIFICATION_READ, "ids": list(ids), "read": True, "unread": 0}).decode()
    return (user_id, {"type": fanout.NOTIFICATION_READ, "frame": frame})


# --- One pipelined call per batch ----------------------------------------------------------------


def test_a_bulk_send_is_one_group_send_many_call_with_one_event_per_recipient(calls, alice, bob, make_user, django_capture_on_commit_callbacks):
    carol = make_user("carol")
    with django_capture_on_commit_callbacks(execute=True):
        created = services.notification_create(recipients=[alice, bob, carol], title="Maintenance")
    assert len(calls) == 1
    [batch] = calls
    assert [group for group, _ in batch] == [fanout.group_for_user(u.pk) for u in (alice, bob, carol)]
    assert [m["id"] for _, m in batch] == [n.id for n in created]
    assert {m["type"] for _, m in batch} == {"notification.created"}


@pytest.fixture
def published(monkeypatch):
    events: list[fanout.Event] = []
    monkeypatch.setattr(fanout, "publish", events.extend)
    return events


def one_by_one(created, unread: dict[int, int]) -> list[fanout.Event]:
    """The events of these notifications rendered each on its own, as for a stored one (admin, shell)."""
    return [(n.recipient_id, fanout.created_event(notification_payload(n), unread[n.recipient_id])) for n in created]


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


def test_a_send_that_expired_before_its_commit_pushes_nothing(alice):
    expired = Notification(recipient=alice, title="late", expires_at=timezone.now() - timedelta(seconds=1))
    assert fanout.notification_sent(expired, ids=[1], recipient_ids=[alice.pk], unread={}, sender_username=None) == 0


def test_without_a_server_loop_events_are_sent_synchronously(calls, alice, django_capture_on_commit_callbacks):
    """The shell, management commands: no daphne loop is bound, the send happens before returning."""
    assert fanout._publisher is None
    with django_capture_on_commit_callbacks(execute=True):
        Notification.objects.create(recipient=alice, title="From the shell")
    assert len(calls) == 1


# --- The publisher on the server loop -----------------------------------------------------------


@pytest.fixture
def completed(monkeypatch):
    """Batches whose send_now has finished (the layer took them or gave up)."""
    done = []
    original = fanout.send_now

    async def recording_send_now(events):
        result = await original(events)
        done.append(list(events))
        return result

    monkeypatch.setattr(fanout, "send_now", recording_send_now)
    return done


async def test_events_published_in_one_loop_turn_leave_in_one_batch(calls, completed):
    fanout.bind_loop()
    for uid in (1, 2, 3):
        fanout.publish([read_event(uid)])
    await fanout.drain()
    assert [[group for group, _ in batch] for batch in calls] == [["inbox.user.1", "inbox.user.2", "inbox.user.3"]]
    assert len(completed) == 1


async def test_drain_returns_only_once_the_layer_has_taken_the_events(calls, completed):
    fanout.bind_loop()
    fanout.publish([read_event(1)])
    await fanout.drain()
    assert len(completed) == 1, "drain returned while the batch was still being sent"


async def test_events_published_from_request_threads_reach_the_layer(calls, completed):
    fanout.bind_loop()
    threads = [threading.Thread(target=fanout.publish, args=([read_event(uid)],)) for uid in range(1, 21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 3
    while sum(len(b) for b in completed) < 20 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await fanout.drain()
    sent = sorted(group for batch in calls for group, _ in batch)
    assert sent == sorted(f"inbox.user.{uid}" for uid in range(1, 21))
    assert len(calls) <= 20


async def test_events_queued_while_redis_is_slow_leave_together_in_the_next_batch(private_redis, settings, completed):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "tests.realtime.recording_layer.RecordingLayer", "CONFIG": {"hosts": [private_redis.url]}}
    }
    channel_layers.backends.clear()
    fanout.bind_loop()
    fanout.publish([read_event(1)])
    await fanout.drain()  # the connection is open

    # Redis stops answering for 0.4 s (a slow command, a fork, a failover).
    slow = threading.Thread(target=lambda: private_redis.client().execute_command("DEBUG", "SLEEP", "0.4"))
    slow.start()
    await asyncio.sleep(0.1)
    fanout.publish([read_event(2)])  # this batch waits on Redis...
    await asyncio.sleep(0.05)
    for uid in range(3, 13):  # ...while these queue up
        fanout.publish([read_event(uid)])
    await fanout.drain()
    slow.join()
    assert [len(batch) for batch in completed] == [1, 1, 10]


async def test_a_full_queue_drops_the_oldest_events_and_logs(calls, completed, settings, caplog):
    settings.REALTIME = {**settings.REALTIME, "MAX_PENDING_EVENTS": 2}
    fanout.bind_loop()
    with caplog.at_level(logging.WARNING, logger="realtime.fanout"):
        fanout.publish([read_event(uid) for uid in (1, 2, 3, 4, 5)])
        await fanout.drain()
    assert [[group for group, _ in batch] for batch in calls] == [["inbox.user.4", "inbox.user.5"]]
    assert "queue full, dropped 3 oldest event(s)" in caplog.text


async def test_bind_loop_replaces_a_publisher_whose_loop_is_gone(calls):
    fanout.bind_loop()
    first = fanout._publisher
    first.task.cancel()
    await asyncio.sleep(0)
    fanout.bind_loop()
    assert fanout._publisher is not first
    fanout.publish([read_event(1)])
    await fanout.drain()
    assert len(calls) == 1


# --- Redis down or hanging: never an exception, always logged ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_a_rest_send_is_still_201_and_stored(dead_redis, client_for, service_account, alice, caplog):
    with caplog.at_level(logging.WARNING, logger="realtime.fanout"):
        response = client_for(service_account).post("/api/notifications/", {"recipient": alice.pk, "title": "Stored anyway"}, format="json")
    assert response.status_code == 201, response.content
    assert Notification.objects.filter(pk=response.json()["id"], recipient=alice).exists()
    assert "1 event(s) not sent" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_with_redis_hanging_a_rest_send_gives_up_pushing_within_the_send_timeout(hanging_redis, client_for, service_account, alice, caplog):
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="realtime.fanout"):
        response = client_for(service_account).post("/api/notifications/", {"recipient": alice.pk, "title": "Stored anyway"}, format="json")
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.content
    assert Notification.objects.filter(recipient=alice).count() == 1
    assert "1 event(s) not sent (TimeoutError" in caplog.text
    assert elapsed < 2.0, f"the send waited {elapsed:.2f}s on a hanging Redis"


async def test_with_redis_down_the_publisher_logs_and_keeps_working(dead_redis, completed, caplog):
    fanout.bind_loop()
    with caplog.at_level(logging.WARNING, logger="realtime.fanout"):
        fanout.publish([read_event(1)])
        await fanout.drain()
        fanout.publish([read_event(2)])
        await fanout.drain()
    assert len(completed) == 2
    assert caplog.text.count("event(s) not sent") == 2
    assert not fanout._publisher.task.done()
