"""
realtime.publisher: how events leave the process. One pipelined group_send_many call per batch, the
publisher on the server loop (bind_loop, queue, drain), and never an exception when Redis is down
or hanging. (Which service sends how many events is counted in tests/inbox/services/test_delivery_calls.py.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import orjson
import pytest
from channels.layers import channel_layers

from inbox.models import Notification
from realtime import protocol, publisher

from tests import services as ext


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


def read_event(user_id: int, ids=(1,)) -> publisher.Event:
    frame = orjson.dumps({"type": protocol.NOTIFICATION_READ, "ids": list(ids), "read": True, "unread": 0}).decode()
    return (user_id, {"type": protocol.NOTIFICATION_READ, "frame": frame})



def test_without_a_server_loop_events_are_sent_synchronously(calls, alice, django_capture_on_commit_callbacks):
    """The shell, management commands: no daphne loop is bound, the send happens before returning."""
    assert publisher.current() is None
    with django_capture_on_commit_callbacks(execute=True):
        Notification.objects.create(recipient=alice, title="From the shell")
    assert len(calls) == 1


# --- The publisher on the server loop -----------------------------------------------------------


@pytest.fixture
def completed(monkeypatch):
    """Batches whose send_now has finished (the layer took them or gave up)."""
    done = []
    original = publisher.send_now

    async def recording_send_now(events):
        result = await original(events)
        done.append(list(events))
        return result

    monkeypatch.setattr(publisher, "send_now", recording_send_now)
    return done


async def test_events_published_in_one_loop_turn_leave_in_one_batch(calls, completed):
    publisher.bind_loop()
    for uid in (1, 2, 3):
        publisher.publish([read_event(uid)])
    await publisher.drain()
    assert [[group for group, _ in batch] for batch in calls] == [["inbox.user.1", "inbox.user.2", "inbox.user.3"]]
    assert len(completed) == 1


async def test_drain_returns_only_once_the_layer_has_taken_the_events(calls, completed):
    publisher.bind_loop()
    publisher.publish([read_event(1)])
    await publisher.drain()
    assert len(completed) == 1, "drain returned while the batch was still being sent"


async def test_events_published_from_request_threads_reach_the_layer(calls, completed):
    publisher.bind_loop()
    threads = [threading.Thread(target=publisher.publish, args=([read_event(uid)],)) for uid in range(1, 21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 3
    while sum(len(b) for b in completed) < 20 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await publisher.drain()
    sent = sorted(group for batch in calls for group, _ in batch)
    assert sent == sorted(f"inbox.user.{uid}" for uid in range(1, 21))
    assert len(calls) <= 20


async def test_events_queued_while_redis_is_slow_leave_together_in_the_next_batch(private_redis, settings, completed):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "tests.realtime.recording_layer.RecordingLayer", "CONFIG": {"hosts": [private_redis.url]}}
    }
    channel_layers.backends.clear()
    publisher.bind_loop()
    publisher.publish([read_event(1)])
    await publisher.drain()  # the connection is open

    # Redis stops answering for 0.4 s (a slow command, a fork, a failover).
    slow = threading.Thread(target=lambda: private_redis.client().execute_command("DEBUG", "SLEEP", "0.4"))
    slow.start()
    await asyncio.sleep(0.1)
    publisher.publish([read_event(2)])  # this batch waits on Redis...
    await asyncio.sleep(0.05)
    for uid in range(3, 13):  # ...while these queue up
        publisher.publish([read_event(uid)])
    await publisher.drain()
    slow.join()
    assert [len(batch) for batch in completed] == [1, 1, 10]


async def test_a_full_queue_drops_the_oldest_events_and_logs(calls, completed, settings, caplog):
    settings.REALTIME = {**settings.REALTIME, "MAX_PENDING_EVENTS": 2}
    publisher.bind_loop()
    with caplog.at_level(logging.WARNING, logger="realtime.publisher"):
        publisher.publish([read_event(uid) for uid in (1, 2, 3, 4, 5)])
        await publisher.drain()
    assert [[group for group, _ in batch] for batch in calls] == [["inbox.user.4", "inbox.user.5"]]
    assert "queue full, dropped 3 oldest event(s)" in caplog.text


async def test_bind_loop_replaces_a_publisher_whose_loop_is_gone(calls):
    publisher.bind_loop()
    first = publisher.current()
    first.task.cancel()
    await asyncio.sleep(0)
    publisher.bind_loop()
    assert publisher.current() is not first
    publisher.publish([read_event(1)])
    await publisher.drain()
    assert len(calls) == 1


# --- Redis down or hanging: never an exception, always logged ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_a_rest_send_is_still_201_and_stored(dead_redis, client_for, service_account, alice, caplog):
    with caplog.at_level(logging.WARNING, logger="realtime.publisher"):
        response = client_for(service_account).post("/api/notifications/", {"recipient": alice.pk, "title": "Stored anyway"}, format="json")
    assert response.status_code == 201, response.content
    assert Notification.objects.filter(pk=response.json()["id"], recipient=alice).exists()
    assert "1 event(s) not sent" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_with_redis_hanging_a_rest_send_gives_up_pushing_within_the_send_timeout(hanging_redis, client_for, service_account, alice, caplog):
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="realtime.publisher"):
        response = client_for(service_account).post("/api/notifications/", {"recipient": alice.pk, "title": "Stored anyway"}, format="json")
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.content
    assert Notification.objects.filter(recipient=alice).count() == 1
    assert "1 event(s) not sent (TimeoutError" in caplog.text
    assert elapsed < 2.0, f"the send waited {elapsed:.2f}s on a hanging Redis"


async def test_with_redis_down_the_publisher_logs_and_keeps_working(dead_redis, completed, caplog):
    publisher.bind_loop()
    with caplog.at_level(logging.WARNING, logger="realtime.publisher"):
        publisher.publish([read_event(1)])
        await publisher.drain()
        publisher.publish([read_event(2)])
        await publisher.drain()
    assert len(completed) == 2
    assert caplog.text.count("event(s) not sent") == 2
    assert not publisher.current().task.done()
