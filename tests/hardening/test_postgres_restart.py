"""
PostgreSQL stopped under a running daphne and started again: requests during the outage get a
clear 503 with Retry-After (never a 500 or a traceback), and the same daphne process serves
again by itself once PostgreSQL is back.

The cluster is a private one (initdb on a free port), so the machine's PostgreSQL is never touched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import pytest

from .conftest import HttpSender, InboxClient, manage, percentile, token_for_id, wait_until

pytestmark = [pytest.mark.e2e]

CREATE_USERS = """
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
User = get_user_model()
sender = User.objects.create_user(username="pg-sender", password="pw-secret-123")
sender.user_permissions.add(Permission.objects.get(codename="send_notification", content_type__app_label="inbox"))
users = [User.objects.create_user(username=f"pg-user-{i}") for i in range(3)]
print(json.dumps({"sender": sender.pk, "users": [u.pk for u in users]}))
"""


def _rows(url: str) -> list[tuple[int, int]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, recipient_id FROM inbox_notification ORDER BY id").fetchall()


async def test_a_postgres_restart_answers_503_during_the_outage_and_recovers_without_a_restart(
    daphne_factory, private_postgres, figures
):
    url = private_postgres.url()
    # The bound a request waits for a connection while PostgreSQL is down (the pool's timeout).
    env = {"DATABASE_URL": url, "DATABASE_CONNECT_TIMEOUT": "2", "DATABASE_POOL_TIMEOUT": "2"}
    await asyncio.to_thread(manage, env, "migrate", "--noinput")
    ids = json.loads((await asyncio.to_thread(manage, env, "shell", "-c", CREATE_USERS)).strip().splitlines()[-1])
    server = daphne_factory(env=env)
    pid = server.proc.pid
    http = HttpSender(server.url, token_for_id(ids["sender"]), concurrency=12)
    user = ids["users"][0]
    client = InboxClient(server.ws_url, token_for_id(user), user_id=user, origin=server.url).start()
    try:
        assert await wait_until(client.synced.is_set, 10)
        before = [await http.send({"recipient": user, "title": f"before-{i}"}) for i in range(5)]
        assert [r[0] for r in before] == [201] * 5

        await asyncio.to_thread(private_postgres.stop, "fast")
        outage_started = time.monotonic()
        # Sends and reads at once: each waits at most the pool timeout, then gets its 503.
        during, reads = await asyncio.gather(
            asyncio.gather(*(http.send({"recipient": user, "title": f"during-{i}"}) for i in range(8))),
            asyncio.gather(
                http.request("GET", "/api/notifications/"),
                http.request("GET", "/api/notifications/unread-count/"),
                http.request("POST", "/api/notifications/read-all/", {}),
                http.request("GET", "/healthz"),
            ),
        )
        # A frame on a socket that was open before the outage: closed with 1013, no traceback.
        await client.send({"type": "read", "ids": [1]})
        assert await wait_until(lambda: 1013 in client.close_codes, 10), client.close_codes
        # A WebSocket opened during the outage is refused with a clear code, not left hanging.
        probe = InboxClient(server.ws_url, token_for_id(user), user_id=user, origin=server.url, reconnect=False)
        await probe.run()
        outage_s = time.monotonic() - outage_started

        await asyncio.to_thread(private_postgres.start)
        restarted = time.monotonic()
        after: list = []

        async def recovered() -> bool:
            result = await http.send({"recipient": user, "title": f"after-{len(after)}"})
            after.append(result)
            return result[0] == 201

        while not await recovered():
            assert time.monotonic() - restarted < 20, f"not recovered 20 s after PostgreSQL came back: {after[-1][:3]}"
            await asyncio.sleep(0.2)
        recovery_s = time.monotonic() - restarted
        more = [await http.send({"recipient": user, "title": f"after-more-{i}"}) for i in range(5)]
        stored = await asyncio.to_thread(_rows, url)
        stored_ids = {nid for nid, _ in stored}
        # The socket that was open during the outage reconnects and catches up.
        assert await wait_until(lambda: set(client.held) == stored_ids, 20), (len(client.held), len(stored_ids))
    finally:
        await client.stop()
        http.close()

    statuses = Counter(r[0] for r in during)
    bodies = [r[2] for r in during] + [r[2] for r in reads[:3]]
    figures.update(
        database="postgresql (private cluster)", sends_before=5, sends_during_outage=len(during), statuses_during_outage={str(k): v for k, v in statuses.items()},
        reads_during_outage=[r[0] for r in reads], websocket_during_outage_close=probe.close_codes,
        websocket_during_outage_connect_failures=probe.connect_failures,
        outage_answer_p50_ms=round(percentile([r[3] for r in during], 50) * 1000, 1),
        outage_answer_max_ms=round(max(r[3] for r in during) * 1000, 1), outage_s=round(outage_s, 2),
        recovered_s_after_postgres_start=round(recovery_s, 2), attempts_until_recovered=len(after),
        stored=len(stored), delivered_to_client=len(client.held), client_close_codes=client.close_codes[:6], same_daphne_pid=server.proc.pid == pid,
    )
    assert statuses == {503: len(during)}, f"sends during the outage: {statuses}"
    for status, headers, body, elapsed, _ in during:
        assert headers.get("Retry-After", "").isdigit()
        assert json.loads(body) == {"detail": "The database is unavailable; try again shortly."}
        assert elapsed < 4, f"a send waited {elapsed:.1f}s on the dead database (pool timeout 2 s)"
    assert all(b"Traceback" not in b for b in bodies)
    assert [r[0] for r in reads] == [503, 503, 503, 503]
    assert all(r[1].get("Retry-After") for r in reads[:3])
    assert probe.close_codes == [1013], f"a socket opened during the outage is closed with 1013: {probe.close_codes}"
    assert server.proc.pid == pid and server.proc.poll() is None, "daphne was not restarted"
    assert all(r[0] == 201 for r in more)
    assert len(stored) == 5 + len(after[-1:]) + 5, "exactly the acknowledged sends are stored"
    assert "Traceback" not in server.read_log(), "the outage produced a traceback in the server log"
