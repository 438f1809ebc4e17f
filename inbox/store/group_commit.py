"""
Group commit: the writes that threads of one process ask for while another write is in flight are
made together, by one of them, in one call.

A send's cost in PostgreSQL is mostly per statement and transaction, not per row: the function's
statements, the locks, the commit (bench/JOURNAL.md, finding 53). Under load the HTTP threads of a
server process (server/http.py) queue here while one of them writes; when its write
returns, it hands what queued meanwhile, as one batch of up to ``max_batch``, to the oldest waiter,
which writes it. Nobody waits for a batch to fill: with nobody writing, a write goes straight
through, alone. A waiter still queued after ``stall_seconds`` (the write in flight waits for a lock
held elsewhere, an admin's long transaction) writes its own item alone beside it, so one stalled
write holds the others of its process for that long at most.

``write(items)`` returns one result per item, in order, or raises; then ``on_error(exc)``, asked
once per waiter, says what that waiter gets: ``RETRY_ALONE`` (it writes its item by itself, when the
write surely stored nothing and the refusal may concern some items only, such as a recipient
deactivated meanwhile) or an exception to raise (a new one for each waiter: one exception object is
not raised in two threads). The thread that wrote raises the write's own exception, unless told
to retry alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

#: ``on_error``'s answer: every waiter writes its item alone (and meets its own error, if any).
RETRY_ALONE = object()

_PENDING = object()


class _Waiter:
    __slots__ = ("item", "event", "batch", "outcome", "error")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.event = threading.Event()
        self.batch: list[_Waiter] | None = None  # set when this waiter is to write that batch
        self.outcome: Any = _PENDING
        self.error: BaseException | None = None


class GroupCommit:
    def __init__(
        self,
        write: Callable[[Sequence[Any]], Sequence[Any]],
        on_error: Callable[[BaseException], Any],
        max_batch: int,
        stall_seconds: float,
    ) -> None:
        self._write = write
        self._on_error = on_error
        self.max_batch = max_batch
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self._queue: list[_Waiter] = []
        self._writers = 0

    def submit(self, item: Any) -> Any:
        """
        The write's result for ``item``, or ``RETRY_ALONE``; raises what ``on_error`` answered, or
        the write's own exception in the thread that made the write.
        """
        me = _Waiter(item)
        with self._lock:
            self._queue.append(me)
            if not self._writers:
                # Nobody is writing, so nobody is waiting: write at once, alone.
                self._writers = 1
                me.batch = self._take()
        try:
            if me.batch is None and not me.event.wait(self.stall_seconds):
                with self._lock:
                    if me in self._queue:
                        # The write in flight is stalled (a lock held elsewhere): write alone, beside it.
                        self._queue.remove(me)
                        self._writers += 1
                        me.batch = [me]
                if me.batch is None:
                    me.event.wait()
        except BaseException:
            # Interrupted while waiting (a KeyboardInterrupt in a shell): leave the queue, or, if
            # handed a batch meanwhile, write it first, since the others in it are waiting for that.
            with self._lock:
                if me in self._queue:
                    self._queue.remove(me)
            if me.batch is not None:
                self._lead(me)
            raise
        if me.batch is None:
            if me.error is not None:
                raise me.error
            return me.outcome
        return self._lead(me)

    def _take(self) -> list[_Waiter]:
        """The next batch, oldest first (under the lock)."""
        batch = self._queue[: self.max_batch]
        del self._queue[: len(batch)]
        return batch

    def _lead(self, me: _Waiter) -> Any:
        batch = me.batch
        own_error = None
        try:
            results = self._write([w.item for w in batch])
            for w, result in zip(batch, results, strict=True):
                w.outcome = result
        except BaseException as exc:  # noqa: BLE001 - every waiter must be woken, whatever it was
            own_error = exc
            for w in batch:
                try:
                    answer = self._on_error(exc)
                except Exception as on_error_failed:  # noqa: BLE001 - a waiter must not be left without an answer
                    answer = on_error_failed
                if answer is RETRY_ALONE:
                    w.outcome = RETRY_ALONE
                else:
                    w.error = answer
        finally:
            with self._lock:
                if self._queue:
                    # What queued meanwhile is the next batch; its oldest waiter writes it.
                    successor = self._queue[0]
                    successor.batch = self._take()
                else:
                    successor = None
                    self._writers -= 1
            for w in batch:
                if w is not me:
                    w.event.set()
            if successor is not None:
                successor.event.set()
        if own_error is not None and me.outcome is not RETRY_ALONE:
            raise own_error
        return me.outcome
