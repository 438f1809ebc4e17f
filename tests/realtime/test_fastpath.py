"""
realtime.fastpath: a live event reaches an idle socket on the channel layer pump's turn
(FastPathConsumerMixin.handle_now, as NotificationConsumer has it), without waking the consumer's
task; anything else waits in the consumer's queue, in order.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from realtime import protocol, publisher
from realtime.consumers import NotificationConsumer
from realtime.fastpath import Later, SendInProgress


def created(notification_id: int, **extra) -> dict:
    payload = {"id": notification_id, "title": f"n{notification_id}"}
    return protocol.created_message(payload, unread=1, **extra)


def read(ids) -> dict:
    return {"type": protocol.NOTIFICATION_READ, "frame": f'{{"type":"notification.read","ids":{list(ids)}}}'}


class Sent(list):
    """The frames a server's send was given, in order."""

    async def __call__(self, message):
        self.append(message["text"])


def an_idle_consumer(send, **state) -> NotificationConsumer:
    """A consumer past connect() and its catch-up (high-water mark 10), waiting on an empty queue."""
    consumer = NotificationConsumer()
    consumer.base_send = send
    consumer.inbox = asyncio.Queue()
    consumer.idle = True
    consumer.group = publisher.group_for_user(1)
    consumer.high_water = 10
    consumer.token_exp = None
    consumer.__dict__.update(state)
    return consumer


async def test_an_idle_socket_sends_a_live_event_at_once_without_queueing_it():
    sent = Sent()
    consumer = an_idle_consumer(sent)
    for event in (created(11), read([11]), {"type": protocol.NOTIFICATION_DELETED, "frame": '{"type":"notification.deleted"}'}):
        assert consumer.handle_now(event) is True
    assert sent == [created(11)["frame"], read([11])["frame"], '{"type":"notification.deleted"}']
    assert consumer.inbox.empty()


async def test_an_event_the_catch_up_already_sent_is_dropped_there_and_a_resend_is_not():
    sent = Sent()
    consumer = an_idle_consumer(sent)
    assert consumer.handle_now(created(10)) is True
    assert sent == []
    assert consumer.handle_now(created(9, resend=True)) is True
    assert sent == [created(9, resend=True)["frame"]]


@pytest.mark.parametrize(
    "state, event",
    [
        ({"idle": False}, created(11)),  # the task is busy (a catch-up, a client's frame)
        ({"group": None}, created(11)),  # connect() has not joined the group yet
        ({"closing": True}, created(11)),
        ({"token_exp": time.time() - 1}, created(11)),  # the task closes with 4401
        ({}, {"type": "notification.created", "notification": {"id": 11}, "unread": 1}),  # an earlier version's event
        ({}, {"type": "something.else", "frame": "{}"}),
    ],
    ids=["busy", "not connected", "closing", "token expired", "no frame", "other type"],
)
async def test_otherwise_the_event_is_left_to_the_task(state, event):
    sent = Sent()
    consumer = an_idle_consumer(sent, **state)
    assert consumer.handle_now(event) is False
    assert sent == []


async def test_with_something_queued_before_it_the_event_waits_its_turn():
    sent = Sent()
    consumer = an_idle_consumer(sent)
    consumer.inbox.put_nowait({"type": "websocket.receive", "text": "{}"})
    assert consumer.handle_now(created(11)) is False
    assert sent == []


async def test_a_send_that_waits_is_finished_by_the_task_before_what_comes_after():
    sent = Sent()
    release = asyncio.Event()

    async def slow_send(message):
        await release.wait()
        sent.append(message["text"])

    consumer = an_idle_consumer(slow_send)
    assert consumer.handle_now(created(11)) is True
    assert sent == []
    in_progress = consumer.inbox.get_nowait()
    assert isinstance(in_progress, SendInProgress)
    consumer.inbox.put_nowait(in_progress)  # as the task finds it
    assert consumer.handle_now(created(12)) is False  # queued behind the send in progress
    finishing = asyncio.ensure_future(in_progress.finish())
    await asyncio.sleep(0.01)
    assert not finishing.done() and sent == []
    release.set()
    await asyncio.wait_for(finishing, 1)
    assert sent == [created(11)["frame"]]


async def test_a_send_that_fails_hands_its_error_to_the_task():
    async def broken_send(message):
        raise ConnectionResetError("gone")

    consumer = an_idle_consumer(broken_send)
    assert consumer.handle_now(created(11)) is True
    error = consumer.inbox.get_nowait()
    assert isinstance(error, ConnectionResetError)


async def test_a_server_whose_send_is_not_a_coroutine_has_it_awaited_by_the_task_in_order():
    sent = Sent()

    class FutureSend:
        """A send returning a plain awaitable, not a coroutine (granian's is a future of its own)."""

        def __call__(self, message):
            future = asyncio.get_running_loop().create_future()
            sent.append(message["text"])
            future.set_result(None)
            return future

    consumer = an_idle_consumer(FutureSend())
    assert consumer.handle_now(created(11)) is True
    later = consumer.inbox.get_nowait()
    assert isinstance(later, Later)
    await later.action()
    assert sent == [created(11)["frame"]]
