"""
The image's deployment with several server processes: scripts/serve.py opens one SO_REUSEPORT
socket per server process (uvicorn, its default) on the same port (INBOX_SERVER_PROCESSES), the
kernel spreads the connections, and Redis carries each send to the process holding the recipient's
socket. Real uvicorn processes, real Redis, the test database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from channels.db import database_sync_to_async

from tests import services as ext

from .conftest import db_ids_by_user, stop_clients, users_online, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]


def established_on(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` the process holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
        count += local_port == port and state == "01" and inode in inodes
    return count


@pytest.fixture
def serve_with_two_servers(daphne_factory, private_redis):
    if not Path("/proc").exists():
        ext.unavailable("needs /proc to see the supervised processes")
    redis = private_redis()
    server = daphne_factory(redis_url=redis.url, server="serve", env={"INBOX_SERVER_PROCESSES": "2", "INBOX_WORKER": "0"})
    deadline = time.monotonic() + 10
    while len(ext.children_of(server.proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return server


async def test_two_server_processes_share_one_port_and_every_send_reaches_its_sockets_on_either(serve_with_two_servers):
    server = serve_with_two_servers
    servers = ext.children_of(server.proc.pid)
    assert len(servers) == 2, server.read_log()
    users, sender, clients, http = await users_online(server, 40)
    try:
        spread = {pid: established_on(pid, server.port) for pid in servers}
        assert all(n > 0 for n in spread.values()), f"connections per server process: {spread}"

        results = await asyncio.gather(*(http.send({"recipient": users[i % 40].pk, "title": f"s{i}"}) for i in range(200)))
        assert Counter(r[0] for r in results) == {201: 200}
        expected = await database_sync_to_async(db_ids_by_user)([u.pk for u in users])
        assert await wait_until(lambda: all(set(c.live_ids) == expected[c.user_id] for c in clients), 15), [
            (c.user_id, len(c.live_ids), len(expected[c.user_id])) for c in clients if set(c.live_ids) != expected[c.user_id]
        ]
        assert sum(c.duplicates for c in clients) == 0
        assert sum(c.foreign for c in clients) == 0
    finally:
        http.close()
        for c in clients:
            c.reconnect = False

    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0, server.read_log()
    assert await wait_until(lambda: all(c.close_codes for c in clients), 10)
    assert Counter(c.close_codes[-1] for c in clients) == {1012: 40}, "every socket told the server restarts"
    assert all(not Path(f"/proc/{pid}").exists() for pid in servers)
    await stop_clients(clients)


def test_a_server_process_that_dies_stops_the_other_and_the_exit_status_is_its_own(serve_with_two_servers):
    server = serve_with_two_servers
    first, second = ext.children_of(server.proc.pid)
    os.kill(first, signal.SIGKILL)
    assert server.proc.wait(25) == 128 + signal.SIGKILL, server.read_log()
    assert not Path(f"/proc/{second}").exists()
    assert f"the server (pid {first}) exited ({128 + signal.SIGKILL}); stopping the other servers" in server.read_log()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INBOX_SERVER_PROCESSES": "2"}, "INBOX_SERVER_PROCESSES=2 needs REDIS_URL (or REDIS_URLS)"),
        ({"INBOX_SERVER_PROCESSES": "two", "REDIS_URL": ext.TEST_REDIS_URL}, "must be a whole number from 1 to 64, not 'two'"),
        ({"INBOX_SERVER_PROCESSES": "0", "REDIS_URL": ext.TEST_REDIS_URL}, "must be a whole number from 1 to 64, not 0"),
    ],
)
def test_a_process_count_it_cannot_honour_is_refused_with_the_reason(env, message):
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_URLS")}
    done = subprocess.run(
        [sys.executable, "scripts/serve.py", sys.executable, "-m", "daphne", "-p", "1", "notifications_site.asgi:application"],
        cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_a_unix_socket_cannot_be_shared_by_several_processes(tmp_path):
    done = subprocess.run(
        [sys.executable, "scripts/serve.py", "daphne", "-u", str(tmp_path / "s.sock"), "notifications_site.asgi:application"],
        cwd=ROOT, env={**os.environ, "INBOX_SERVER_PROCESSES": "2", "REDIS_URL": ext.TEST_REDIS_URL},
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert "-u cannot be shared by several server processes" in done.stderr


def test_the_ports_sockets_hand_their_connections_over_with_tcp_nodelay():
    # uvicorn takes a --fd for a Unix socket and never sets TCP_NODELAY on what it accepts: without it
    # on the listening socket (accepted connections inherit it), each response met a 40 ms delayed ACK.
    listener = ext.serve_script().listening_socket("127.0.0.1", 0)
    try:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["notifications_site.asgi:application"], 2, "is an application, not a command: give it after the options"),
        (["no-such-server", "--port", "1"], 127, "cannot start no-such-server: No such file or directory"),
    ],
)
def test_a_command_it_cannot_run_is_refused_with_the_reason(args, status, message):
    done = subprocess.run(
        [sys.executable, "scripts/serve.py", *args], cwd=ROOT, env={**os.environ, "INBOX_WORKER": "0"},
        capture_output=True, text=True, timeout=30,
    )
    assert (done.returncode, message in done.stderr) == (status, True), done.stderr
