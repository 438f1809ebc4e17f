"""SocketQueue: one socket's messages, in order, for its one reader."""

from __future__ import annotations

import asyncio
import sys

import pytest

from realtime.layers.queues import SocketQueue


@pytest.mark.asyncio
async def test_items_come_out_in_the_order_they_were_put():
    queue = SocketQueue()
    for i in range(100):
        queue.put_nowait(i)
    assert queue.qsize() == 100
    assert [await queue.get() for _ in range(100)] == list(range(100))
    assert queue.empty() and queue.qsize() == 0


@pytest.mark.asyncio
async def test_a_waiting_reader_is_woken_by_the_next_put():
    queue = SocketQueue()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert queue.reading() and not reader.done()
    queue.put_nowait("frame")
    assert await asyncio.wait_for(reader, 1) == "frame"
    assert not queue.reading()


@pytest.mark.asyncio
async def test_a_cancelled_reader_leaves_the_queue_usable():
    queue = SocketQueue()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert not queue.reading()
    queue.put_nowait(1)
    assert await asyncio.wait_for(queue.get(), 1) == 1


@pytest.mark.asyncio
async def test_a_second_reader_is_refused_while_one_waits():
    queue = SocketQueue()
    first = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one reader"):
        await queue.get()
    queue.put_nowait("x")
    assert await first == "x"


def test_get_nowait_on_an_empty_queue_raises_queue_empty():
    with pytest.raises(asyncio.QueueEmpty):
        SocketQueue().get_nowait()


def test_an_empty_queue_is_a_fraction_of_an_asyncio_queue():
    queue = SocketQueue()
    queue.put_nowait(1)
    queue.get_nowait()  # emptied: it holds no deque
    assert sys.getsizeof(queue) + sys.getsizeof(queue._items) < sys.getsizeof(asyncio.Queue()._queue) / 5
