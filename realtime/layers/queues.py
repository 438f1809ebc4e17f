"""
``SocketQueue``: the queue of one socket's messages in a server process, a tenth of an ``asyncio.Queue``.

Every open socket has one (``BatchingRedisChannelLayer.attach``). An empty ``asyncio.Queue`` is four
deques (its items, getters, putters and the ``join()`` event's waiters), about 3.3 KB of the 34 KB a
socket cost under uvicorn (bench/JOURNAL.md, finding 81), for features a socket's queue never uses:
a bound, several readers, ``join()``. This one is unbounded, has one reader, and holds a deque only
while something is queued.
"""

from __future__ import annotations

import asyncio
import collections


class SocketQueue:
    """An unbounded FIFO with one reader: ``put_nowait``, ``get``, ``get_nowait``, ``qsize``, ``empty``."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque | None = None  # made by a put, dropped when a get empties it
        self._waiter: asyncio.Future | None = None  # the reader's, while it waits on an empty queue

    def qsize(self) -> int:
        items = self._items
        return len(items) if items is not None else 0

    def empty(self) -> bool:
        return self._items is None

    def reading(self) -> bool:
        """Whether a reader waits in ``get`` now."""
        return self._waiter is not None

    def put_nowait(self, item) -> None:
        items = self._items
        if items is None:
            items = self._items = collections.deque()
        items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self):
        items = self._items
        if items is None:
            raise asyncio.QueueEmpty
        item = items.popleft()
        if not items:
            self._items = None
        return item

    async def get(self):
        while self._items is None:
            if self._waiter is not None:
                raise RuntimeError("SocketQueue has one reader: another get() is waiting")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self.get_nowait()
