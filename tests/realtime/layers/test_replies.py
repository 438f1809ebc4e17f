"""realtime.layers.replies: wait_reply bounds a Redis call by the time an event loop had to run it, not by the wall clock."""

import asyncio
import gc
import time

import pytest

from realtime.layers.replies import wait_reply


async def _reply_after(seconds: float, value="reply"):
    await asyncio.sleep(seconds)
    return value


async def _never_answers(cancelled: asyncio.Event):
    """A call Redis never answers; ``cancelled`` is set when it is cancelled."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cancelled.set()
        raise


def _block_the_loop_soon(seconds: float) -> None:
    """What thousands of queued socket sends do to a process' loop during a broadcast."""
    asyncio.get_running_loop().call_later(0.02, time.sleep, seconds)


async def test_a_reply_in_time_is_returned():
    assert await wait_reply(_reply_after(0.01), 1.0) == "reply"


async def test_no_reply_on_an_idle_loop_is_a_timeout_after_the_period():
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await wait_reply(asyncio.Event().wait(), 0.2)
    assert 0.2 <= time.monotonic() - started < 1.0


async def test_a_reply_that_came_while_the_loop_was_blocked_is_not_a_timeout():
    _block_the_loop_soon(0.5)
    assert await wait_reply(_reply_after(0.05), 0.2) == "reply"


async def test_a_cancelling_timeout_like_redis_pys_socket_timeout_gives_up_on_that_same_reply():
    """The failure wait_reply avoids: redis-py bounds reads with asyncio.timeout, which cancels the
    reading task when the time is up, although its reply is there and it only waits for its turn."""
    _block_the_loop_soon(0.5)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await _reply_after(0.05)


async def test_a_loop_that_stays_busy_still_gives_up_after_ten_periods():
    async def keep_blocking():
        while True:
            time.sleep(0.05)  # a loop that is always 50 ms behind
            await asyncio.sleep(0)

    busy = asyncio.ensure_future(keep_blocking())
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await wait_reply(asyncio.Event().wait(), 0.1)
    finally:
        busy.cancel()
    assert time.monotonic() - started < 3.0


async def test_the_call_is_cancelled_when_it_times_out():
    cancelled = asyncio.Event()

    with pytest.raises(TimeoutError):
        await wait_reply(_never_answers(cancelled), 0.1)
    await asyncio.wait_for(cancelled.wait(), 1.0)


async def test_the_call_runs_in_the_callers_task_and_a_reply_already_there_costs_no_turn_of_the_loop():
    # A task and an asyncio.wait per call cost two turns of a busy server loop each (finding 48).
    async def answer_at_once():
        return asyncio.current_task()

    turned = []
    asyncio.get_running_loop().call_soon(turned.append, "a turn of the loop")
    assert await wait_reply(answer_at_once(), 1.0) is asyncio.current_task()
    assert turned == []


async def test_cancelling_the_caller_cancels_the_call_and_is_not_a_timeout():
    cancelled = asyncio.Event()

    caller = asyncio.ensure_future(wait_reply(_never_answers(cancelled), 0.2))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled.is_set()


async def test_a_timeout_error_of_the_call_itself_passes_through_unchanged():
    async def connect_fails():
        raise TimeoutError("Timeout connecting to server")

    with pytest.raises(TimeoutError, match="Timeout connecting to server"):
        await wait_reply(connect_fails(), 1.0)


def _keep_the_loop_turning_slowly(turn_seconds: float):
    """What a reconnect storm does to a process' loop: every turn busy for a few tens of milliseconds."""
    loop = asyncio.get_running_loop()
    handle = None

    def busy_turn():
        nonlocal handle
        time.sleep(turn_seconds)
        handle = loop.call_soon(busy_turn)

    handle = loop.call_soon(busy_turn)
    return lambda: handle.cancel()  # stops it


async def _reply_after_turns(turns: int, value="reply"):
    """A reply already read from the socket, which takes a dozen turns of the loop to reach its caller."""
    for _ in range(turns):
        await asyncio.sleep(0)
    return value


async def test_a_reply_slowed_by_many_short_busy_turns_is_not_a_timeout():
    # 40 turns of 30 ms: 1.2 s for a reply bounded by 0.4 s, although no single turn takes a quarter of it.
    stop = _keep_the_loop_turning_slowly(0.03)
    try:
        assert await wait_reply(_reply_after_turns(40), 0.4) == "reply"
    finally:
        stop()


async def test_those_short_busy_turns_are_what_the_one_turn_check_alone_took_for_a_lost_redis():
    stop = _keep_the_loop_turning_slowly(0.03)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        await _reply_after_turns(40)
        took = loop.time() - started
        turn_started = loop.time()
        await asyncio.sleep(0)
        one_turn = loop.time() - turn_started
    finally:
        stop()
    assert took > 0.4 and one_turn < 0.4 / 4


async def test_the_loops_lag_timer_runs_only_while_a_reply_is_awaited():
    from realtime.layers.replies import loop_lag

    assert await wait_reply(_reply_after(0.3), 1.0) == "reply"
    lag = loop_lag(asyncio.get_running_loop())
    ticks = len(lag.samples)
    assert ticks >= 2  # it ticked every 50 ms while the reply was awaited
    await asyncio.sleep(0.3)
    assert lag.pending == 0
    assert len(lag.samples) <= ticks + 1  # at most the tick that found nothing pending


async def test_a_silent_redis_on_a_loop_of_short_busy_turns_still_gives_up_after_ten_periods():
    stop = _keep_the_loop_turning_slowly(0.03)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(TimeoutError, match="Redis did not answer within 0.1s"):
            await wait_reply(asyncio.Event().wait(), 0.1)
    finally:
        stop()
    assert 1.0 <= loop.time() - started < 3.0


def test_a_loop_that_awaited_replies_is_freed_with_its_lag_entry():
    # async_to_sync and asyncio.run make a loop per call (management commands, WSGI sends).
    import weakref

    gone = []
    for _ in range(5):
        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(wait_reply(_reply_after(0.01), 1.0)) == "reply"
        finally:
            loop.close()
        gone.append(weakref.ref(loop))
        del loop
    gc.collect()
    assert [ref() for ref in gone] == [None] * 5
