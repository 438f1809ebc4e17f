"""
Fixtures for the fault, abuse and fuzz tests.

- Private servers the tests may kill: ``private_redis`` (a redis-server on a free port),
  ``hanging_redis`` (a socket that accepts and never answers), ``private_postgres`` (an initdb
  cluster on a free port). The machine's shared Redis and PostgreSQL are never touched.
- ``InboxClient``: a model of a real WebSocket client (websockets, asyncio). It catches up with
  ``?after=<last id>``, de-duplicates by id, counts duplicates and foreign rows, and reconnects
  with a short back-off, as the browser client does.
- ``HttpSender``: sends through http.client in a thread pool (keep-alive, ~16 in flight).
- ``figures``: what each test measured, printed (``-s``) and merged into
  ``test-artifacts/reliability.json`` so docs/reliability.md can be refreshed from a run.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from tests import services as ext

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "reliability.json"
PG_BIN = Path(os.environ.get("INBOX_PG_BIN", "/usr/lib/postgresql/15/bin"))


# --- Figures ----------------------------------------------------------------------------------

_figures: dict[str, dict] = {}


@pytest.fixture
def figures(request):
    """A dict the test fills with what it measured; printed and saved when the test ends."""
    data: dict = {}
    yield data
    if data:
        rep = getattr(request.node, "rep_call", None)
        data["outcome"] = rep.outcome if rep is not None else "unknown"
        data.setdefault("database", _database_vendor())
        _figures[f"{request.node.name} @ {data['database']}"] = data
        print(f"\nFIGURES {request.node.name}: {json.dumps(data, sort_keys=True)}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call":
        item.rep_call = rep
    return rep


def pytest_sessionfinish(session, exitstatus):
    if not _figures:
        return
    ARTIFACTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        stored = json.loads(ARTIFACTS.read_text())
    except (FileNotFoundError, ValueError):
        stored = {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for name, data in _figures.items():
        stored[name] = {**data, "at": stamp}
    ARTIFACTS.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")


def _database_vendor() -> str:
    from django.db import connection

    return connection.vendor


# --- Private Redis ----------------------------------------------------------------------------


class RedisProcess:
    """A redis-server of our own on a free port, without persistence: a restart loses everything."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or ext.free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisProcess":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--maxclients", "10000", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def restart(self) -> "RedisProcess":
        self.kill()
        return self.start()


@pytest.fixture
def private_redis(tmp_path):
    """Start redis-server processes of this test's own; all are killed afterwards."""
    if shutil.which("redis-server") is None:
        ext.unavailable("redis-server is not installed")
    started: list[RedisProcess] = []

    def start(port: int | None = None) -> RedisProcess:
        r = RedisProcess(tmp_path, port).start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.kill()


class HangingRedis:
    """A listening socket that accepts connections and never answers: Redis reachable but hung."""

    def __init__(self):
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4096)
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read, never answered

    def open_connections(self) -> int:
        """Accepted connections the client side has not closed yet."""
        alive = 0
        for c in self.accepted:
            try:
                c.setblocking(False)
                data = c.recv(65536, socket.MSG_PEEK)
                alive += 1 if data else 0
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def stop(self) -> None:
        self.stopped = True
        self.server.close()
        for c in self.accepted:
            c.close()


@pytest.fixture
def hanging_redis():
    h = HangingRedis()
    yield h
    h.stop()


# --- Private PostgreSQL -----------------------------------------------------------------------


class PostgresCluster:
    """An initdb cluster of this test's own on a free port (run as the 'postgres' OS user when root)."""

    def __init__(self):
        self.port = ext.free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="inbox-pg-"))
        self.data = self.dir / "data"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    def url(self, db: str = "inbox") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, timeout=timeout, cwd=self.dir)

    def init(self) -> "PostgresCluster":
        self._run(PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> "PostgresCluster":
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-o", opts, "-l", self.dir / "server.log", "-w", "-t", "30", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def createdb(self, name: str = "inbox") -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except subprocess.SubprocessError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres():
    """A fresh PostgreSQL cluster with an empty 'inbox' database, destroyed afterwards."""
    if not (PG_BIN / "initdb").exists():
        ext.unavailable(f"PostgreSQL server binaries are not installed ({PG_BIN}/initdb missing)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            ext.unavailable("running as root without a 'postgres' OS user to run the private cluster")
    cluster = PostgresCluster()
    try:
        cluster.init().start()
        cluster.createdb("inbox")
        yield cluster
    finally:
        cluster.destroy()


def manage(env: dict, *args: str, timeout: float = 120) -> str:
    """Run manage.py with the production settings and this environment; returns stdout."""
    full = dict(os.environ)
    full.update({"DJANGO_SETTINGS_MODULE": "notifications_site.settings", "DJANGO_DEBUG": "1", **env})
    if "REDIS_URL" not in env:
        full.pop("REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


# --- Users and tokens -------------------------------------------------------------------------


def make_users(n: int, prefix: str = "u") -> list:
    """n active users in one bulk write (no passwords: they authenticate with JWTs)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    tag = uuid.uuid4().hex[:6]
    users = [User(username=f"{prefix}{i}-{tag}", is_active=True) for i in range(n)]
    for u in users:
        u.set_unusable_password()
    User.objects.bulk_create(users)
    return list(User.objects.filter(username__endswith=f"-{tag}").order_by("id"))


def make_sender(name: str = "sender"):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    User = get_user_model()
    user = User.objects.create_user(username=f"{name}-{uuid.uuid4().hex[:6]}", password="pw-secret-123")
    user.user_permissions.add(Permission.objects.get(codename="send_notification", content_type__app_label="inbox"))
    return User.objects.get(pk=user.pk)


def token_for_id(user_id: int) -> str:
    """An access token for a user id (also for users of a database this process does not use)."""
    from rest_framework_simplejwt.settings import api_settings
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken()
    token[api_settings.USER_ID_CLAIM] = str(user_id) if isinstance(user_id, str) else user_id
    return str(token)


# --- WebSocket client -------------------------------------------------------------------------


class InboxClient:
    """
    One browser-like client of one user. ``run()`` keeps it connected: each (re)connect asks for
    ``?after=<last id>``, and frames are de-duplicated by id as the real client does. It counts what
    the server did wrong: duplicate frames, other users' notifications.
    """

    def __init__(self, ws_url: str, token: str, *, user_id: int, origin: str, reconnect: bool = True,
                 max_delay: float = 1.0, open_timeout: float = 5.0):
        self.ws_url = ws_url
        self.token = token
        self.user_id = user_id
        self.origin = origin
        self.reconnect = reconnect
        self.max_delay = max_delay
        self.open_timeout = open_timeout
        self.held: dict[int, dict] = {}
        self.deleted: set[int] = set()
        self.first_seen: dict[int, float] = {}
        self.live_ids: set[int] = set()
        self.duplicates = 0
        self.foreign = 0
        self.last_id = 0
        self.unread: int | None = None
        self.connections = 0
        self.connect_failures = 0
        self.close_codes: list[int | None] = []
        self.errors: list[dict] = []
        self.pongs = 0
        self.synced = asyncio.Event()
        self.connected_at: float | None = None
        self.ws = None
        self.stopping = False
        self.task: asyncio.Task | None = None

    # The URL of the next connection: catch up from what this client already holds.
    def url(self) -> str:
        return f"{self.ws_url}?after={self.last_id}"

    async def _connect(self):
        from websockets.asyncio.client import connect

        return await connect(
            self.url(), origin=self.origin, subprotocols=["bearer", self.token], compression=None,
            open_timeout=self.open_timeout, ping_interval=None, close_timeout=2, max_size=None,
        )

    def start(self) -> "InboxClient":
        self.task = asyncio.create_task(self.run())
        return self

    async def run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        delay = 0.1
        while not self.stopping:
            self.synced.clear()
            try:
                ws = await self._connect()
            except Exception:  # refused, 403, handshake timeout (a cancellation is not an Exception)
                self.connect_failures += 1
                if not self.reconnect:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
                continue
            self.ws = ws
            self.connections += 1
            self.connected_at = time.monotonic()
            try:
                async for raw in ws:
                    self.on_frame(orjson.loads(raw))
                    delay = 0.1
            except ConnectionClosed:
                pass
            finally:
                self.ws = None
                self.synced.clear()
            self.close_codes.append(ws.close_code)
            if self.stopping or not self.reconnect:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    def on_frame(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "notification.created":
            n = frame["notification"]
            nid = n["id"]
            if n["recipient"] != self.user_id:
                self.foreign += 1
            if nid in self.held or nid in self.deleted:
                self.duplicates += 1
            else:
                self.held[nid] = n
                self.first_seen[nid] = time.monotonic()
                if not frame.get("catchup"):
                    self.live_ids.add(nid)
            self.last_id = max(self.last_id, nid)
            self.unread = frame.get("unread", self.unread)
        elif kind == "notification.read":
            for nid in frame["ids"]:
                if nid in self.held:
                    self.held[nid] = {**self.held[nid], "state": "read" if frame["read"] else "unread-again"}
            self.unread = frame["unread"]
        elif kind == "notification.deleted":
            for nid in frame["ids"]:
                self.held.pop(nid, None)
                self.deleted.add(nid)
            self.unread = frame["unread"]
        elif kind == "sync.done":
            self.last_id = max(self.last_id, frame["last_id"])
            self.unread = frame["unread"]
            if frame.get("more") and self.ws is not None:
                asyncio.ensure_future(self.ws.send(orjson.dumps({"type": "sync", "after": self.last_id}).decode()))
            else:
                self.synced.set()
        elif kind == "error":
            self.errors.append(frame)
        elif kind == "pong":
            self.pongs += 1

    async def send(self, frame: dict) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def stop(self) -> None:
        self.stopping = True
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:
                pass
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


async def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


async def start_clients(server, users_tokens: Iterable[tuple[int, str]], *, timeout: float = 30, **kw) -> list[InboxClient]:
    """Connect one client per (user id, token) and wait until every one finished its first sync."""
    clients = [
        InboxClient(server.ws_url, token, user_id=uid, origin=server.url, **kw).start() for uid, token in users_tokens
    ]
    ok = await wait_until(lambda: all(c.synced.is_set() for c in clients), timeout)
    assert ok, f"only {sum(c.synced.is_set() for c in clients)} of {len(clients)} clients connected and synced"
    return clients


async def users_online(server, count: int, *, concurrency: int = 16):
    """``count`` users with one synced client each, a sender, and an HTTP sender for it."""
    from channels.db import database_sync_to_async

    users = await database_sync_to_async(make_users)(count)
    sender = await database_sync_to_async(make_sender)()
    clients = await start_clients(server, [(u.pk, token_for_id(u.pk)) for u in users])
    return users, sender, clients, HttpSender(server.url, token_for_id(sender.pk), concurrency=concurrency)


async def stop_clients(clients: Iterable[InboxClient]) -> None:
    await asyncio.gather(*(c.stop() for c in clients))


# --- HTTP sender ------------------------------------------------------------------------------


class HttpSender:
    """POSTs through http.client on a pool of threads, each with its own keep-alive connection."""

    def __init__(self, base_url: str, token: str, *, concurrency: int = 16, timeout: float = 15.0):
        host_port = base_url.split("//", 1)[1]
        self.host, port = host_port.split(":")
        self.port = int(port)
        self.token = token
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(concurrency, thread_name_prefix="sender")
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def request_sync(self, method: str, path: str, body: dict | None = None, headers: dict | None = None,
                     raw: bytes | None = None) -> tuple[int, dict, bytes, float]:
        """Returns (status, headers, body, seconds); status 0 when the connection failed."""
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        h = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", **(headers or {})}
        started = time.monotonic()
        conn = self._conn()
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, dict(resp.getheaders()), payload, time.monotonic() - started
        except (OSError, http.client.HTTPException):
            conn.close()
            self.local.conn = None
            return 0, {}, b"", time.monotonic() - started

    async def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None,
                      raw: bytes | None = None) -> tuple[int, dict, bytes, float]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: self.request_sync(method, path, body, headers, raw))

    async def send(self, body: dict, *, key: str | None = None, retry_until: float | None = None):
        """POST one notification; with ``retry_until`` retry connection failures and 5xx with the same Idempotency-Key."""
        headers = {"Idempotency-Key": key} if key else None
        attempts = 0
        while True:
            attempts += 1
            status, hdrs, payload, elapsed = await self.request("POST", "/api/notifications/", body, headers)
            if retry_until is None or (status and status < 500) or time.monotonic() > retry_until:
                return status, hdrs, payload, elapsed, attempts
            await asyncio.sleep(0.2)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def db_ids_by_user(user_ids: Iterable[int]) -> dict[int, set[int]]:
    from inbox.models import Notification

    out: dict[int, set[int]] = {uid: set() for uid in user_ids}
    for nid, rid in Notification.objects.filter(recipient_id__in=list(out)).values_list("id", "recipient_id"):
        out[rid].add(nid)
    return out
