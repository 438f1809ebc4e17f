"""
What a connect costs the database (issue 22; bench/JOURNAL.md, finding 61): the token's user before
the socket joins its group (unless this process remembers it), then one statement for the rest.
"""

from __future__ import annotations

import contextlib

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from inbox import directory, services

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.asynccontextmanager
async def database_thread_queries():
    """The statements run by ``database_sync_to_async`` code (one thread, its own connection) while the block runs."""
    capture = CaptureQueriesContext(connection)
    await database_sync_to_async(capture.__enter__)()
    statements: list[str] = []
    try:
        yield statements
    finally:
        await database_sync_to_async(capture.__exit__)(None, None, None)
        statements.extend(await database_sync_to_async(lambda: [q["sql"] for q in capture.captured_queries])())


@pytest.mark.parametrize("cursor", [{}, {"after": 0}, {"query": "since=0"}], ids=["pending", "after", "since"])
async def test_a_connect_asks_the_database_twice_and_once_when_the_process_remembers_the_user(ws, send, alice, cursor):
    await send(alice, title="waiting")
    directory.forget_all()
    for expected in (2, 1):  # the second connect finds alice in the directory (inbox/directory.py)
        async with database_thread_queries() as statements:
            sock = await ws(alice, **cursor)
            frames, done = await sock.until_sync_done()
            await sock.disconnect()
        assert len(frames) == 1 and done["unread"] == 1
        # Sending the page re-reads the unread count for sync.done, as before: one more statement.
        assert len(statements) == expected + 1, statements


async def test_a_connect_with_nothing_to_send_asks_the_database_twice(ws, alice):
    directory.forget_all()
    async with database_thread_queries() as statements:
        sock = await ws(alice)
        _, done = await sock.until_sync_done()
        await sock.disconnect()
    assert done["unread"] == 0
    assert len(statements) == 2, statements


async def test_a_replay_with_deletions_reads_their_tombstones_in_a_third_statement(ws, send, alice):
    [n] = await send(alice, title="deleted")
    await database_sync_to_async(services.notification_delete)(user=alice, ids=[n.id])
    directory.forget_all()
    async with database_thread_queries() as statements:
        sock = await ws(alice, query="since=0")
        frames, _ = await sock.until_sync_done()
        await sock.disconnect()
    assert [f["type"] for f in frames] == ["notification.deleted"]
    assert len(statements) == 4, statements  # the user, the snapshot, its tombstones, the unread count
