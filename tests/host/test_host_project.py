"""
Inbox as a package inside a product's own Django project, proven from the outside.

A fresh host project is built in a temporary directory (``django-admin startproject``) with a custom
user model keyed by a UUID (an ``accounts`` app), and the package is installed from this working
tree into a fresh venv (``pip install``). The host adds the apps to INSTALLED_APPS, includes
``inbox.urls`` and puts ``realtime.asgi.inbox_websocket`` in its ASGI router: nothing else of
Inbox's (no ``server`` app, no INBOX / REALTIME / SERVER dict), a plain channels-redis layer and
the host's own REST authentication. Then, on SQLite and on PostgreSQL: migrate, start the host's
daphne, open sockets as a host user (the host's simplejwt token, the host's session cookie), call
``notify`` inside ``transaction.atomic()`` from another process, and the sockets receive it; a
rolled-back ``notify`` delivers nothing and stores nothing.

The venv is built once per test session (about a minute: pip resolves and installs every
dependency) and shared by both databases. Redis and PostgreSQL are the real servers: without them
the test is skipped with the reason, except in CI, where it fails (tests/services.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import Request, urlopen

import pytest

from tests import services as ext

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.timeout(420)]

ROOT = ext.ROOT
#: What the package is built from (pyproject.toml's packages and its readme).
SOURCES = ("pyproject.toml", "README.md", "inbox", "realtime", "server")
TIMEOUT = 10

ACCOUNTS_MODELS = '''
import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
'''

# Appended to the settings startproject wrote: all a host adds for Inbox, plus its database and layer.
SETTINGS_TAIL = '''

# --- Inbox, as a host adds it (README, "Inside your Django project") ---
import os

INSTALLED_APPS += ["rest_framework", "rest_framework_api_key", "inbox", "realtime", "accounts"]
AUTH_USER_MODEL = "accounts.User"
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ["HOST_REDIS_URL"]], "prefix": os.environ["HOST_LAYER_PREFIX"]},
    }
}
if os.environ["HOST_DATABASE"] == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["HOST_DB_NAME"],
            "USER": os.environ["HOST_DB_USER"],
            "PASSWORD": os.environ.get("HOST_DB_PASSWORD", ""),
            "HOST": os.environ["HOST_DB_HOST"],
            "PORT": os.environ["HOST_DB_PORT"],
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["HOST_DB_NAME"]}}
'''

ASGI = '''
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hostsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from realtime.asgi import inbox_websocket  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": inbox_websocket(prefix="inbox/")})
'''

URLS = '''
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("inbox/", include("inbox.urls")),
]
'''

# Run in the host's venv with its settings: a user, the host's own token for them and a signed-in session.
MAKE_USER = '''
import json

import django

django.setup()

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from rest_framework_simplejwt.tokens import AccessToken

User = get_user_model()
alice = User.objects.create_user("alice", password="pw-alice-123")
session = SessionStore()
session[SESSION_KEY] = User._meta.pk.value_to_string(alice)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = alice.get_session_auth_hash()
session.create()
print(json.dumps({"pk": str(alice.pk), "token": str(AccessToken.for_user(alice)), "session": session.session_key}))
'''

# The product's own code: notify in its transactions, one of them rolled back.
SEND = '''
import json

import django

django.setup()

from django.contrib.auth import get_user_model
from django.db import transaction

from inbox import NotificationInvalid, notify
from inbox.models import Notification

alice = get_user_model().objects.get(username="alice")
with transaction.atomic():
    first = notify(recipient=alice, title="committed", data={"order": 5}, link="/orders/5")
try:
    with transaction.atomic():
        notify(recipient=alice, title="rolled back")
        raise RuntimeError("the product's transaction fails")
except RuntimeError:
    pass
with transaction.atomic():
    last = notify(recipients=[alice.pk], title="last", category="billing", idempotency_key="order-5-paid")
retried = notify(recipients=[str(alice.pk)], title="last", category="billing", idempotency_key="order-5-paid")
try:
    notify(recipient=alice, title="x" * 201)
    refused = False
except NotificationInvalid:
    refused = True
print(json.dumps({
    "first": first.id,
    "last": [n.id for n in last],
    "retried": [n.id for n in retried],
    "refused": refused,
    "titles": sorted(Notification.objects.filter(recipient=alice).values_list("title", flat=True)),
}))
'''


# --- The host project and its venv (once per session) -------------------------------------------


class Host:
    """The host project in ``site`` and the venv in ``venv`` that has the package installed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "venv"
        self.site = root / "site"
        self.python = str(self.venv / "bin" / "python")

    def run(self, args: list[str], env: dict, timeout: float = 120) -> str:
        done = subprocess.run(args, cwd=self.site, env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def manage(self, *args: str, env: dict) -> str:
        return self.run([self.python, "manage.py", *args], env)

    def env(self, database: str, *, db_name: str, pg: dict | None = None) -> dict:
        """The environment of the host's processes on ``database`` (sqlite, postgresql)."""
        env = _clean_env()
        env.update(
            DJANGO_SETTINGS_MODULE="hostsite.settings",
            HOST_DATABASE=database,
            HOST_DB_NAME=db_name,
            HOST_REDIS_URL=ext.TEST_REDIS_URL,
            HOST_LAYER_PREFIX=f"host-{uuid.uuid4().hex[:8]}",
        )
        for key, value in (pg or {}).items():
            env[f"HOST_DB_{key}"] = value
        return env

    def script(self, code: str, env: dict) -> dict:
        """Run ``code`` with the host's settings in its venv; its last line of output is JSON."""
        return json.loads(self.run([self.python, "-c", code], env).strip().splitlines()[-1])


def _clean_env() -> dict:
    """This process's environment without what would point the host at the service's settings or venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONPATH", "DATABASE_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def host(tmp_path_factory) -> Host:
    """A fresh venv with the package installed from the working tree, and a startproject host in it."""
    h = Host(tmp_path_factory.mktemp("host"))
    # pip builds in the source tree (build/, *.egg-info): a copy keeps the working tree untouched.
    src = h.root / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(h.venv)], check=True, timeout=120)
    done = subprocess.run(
        [h.python, "-m", "pip", "install", "--quiet", f"{src}[postgres]"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"pip install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    h.site.mkdir()
    subprocess.run([str(h.venv / "bin" / "django-admin"), "startproject", "hostsite", str(h.site)], check=True, env=env, timeout=60)
    h.run([h.python, "manage.py", "startapp", "accounts"], env)
    (h.site / "accounts" / "models.py").write_text(ACCOUNTS_MODELS)
    settings = h.site / "hostsite" / "settings.py"
    settings.write_text(settings.read_text() + SETTINGS_TAIL)
    (h.site / "hostsite" / "asgi.py").write_text(ASGI)
    (h.site / "hostsite" / "urls.py").write_text(URLS)
    h.manage("makemigrations", "accounts", env=h.env("sqlite", db_name=str(h.root / "makemigrations.sqlite3")))
    return h



# --- The databases --------------------------------------------------------------------------------


def _postgres_server() -> dict:
    """Where PostgreSQL is: the suite's DATABASE_URL when it names one, else the local default."""
    url = os.environ.get("DATABASE_URL", "")
    u = urlparse(url if url.startswith(("postgres://", "postgresql://")) else "postgres://postgres@127.0.0.1:5432/postgres")
    return {"USER": u.username or "postgres", "PASSWORD": u.password or "", "HOST": u.hostname or "127.0.0.1", "PORT": str(u.port or 5432)}


def _admin_sql(server: dict, statement: str) -> None:
    import psycopg

    with psycopg.connect(
        dbname="postgres", user=server["USER"], password=server["PASSWORD"] or None, host=server["HOST"], port=server["PORT"],
        autocommit=True,
    ) as conn:
        conn.execute(statement)


@pytest.fixture(params=["sqlite", "postgresql"])
def host_env(request, host, tmp_path):
    """The host's environment for one database, migrated from scratch; PostgreSQL's database is dropped after."""
    if not ext.redis_available():
        ext.unavailable(f"Redis is not reachable at {ext.TEST_REDIS_URL}")
    if request.param == "sqlite":
        env = host.env("sqlite", db_name=str(tmp_path / "host.sqlite3"))
        host.manage("migrate", "--noinput", env=env)
        yield env
        return
    server = _postgres_server()
    if not ext.port_open(server["HOST"], int(server["PORT"])):
        ext.unavailable(f"PostgreSQL is not reachable at {server['HOST']}:{server['PORT']}")
    name = f"inbox_host_{os.environ.get('INBOX_TEST_DB') or 'test'}"
    _admin_sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_sql(server, f'CREATE DATABASE "{name}"')
    try:
        env = host.env("postgresql", db_name=name, pg=server)
        host.manage("migrate", "--noinput", env=env)
        yield env
    finally:
        _admin_sql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def host_server(host, host_env, tmp_path):
    """The host's own daphne (from its venv) serving hostsite.asgi on a free port."""
    port = ext.free_port()
    log_path = tmp_path / "host-daphne.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(host.venv / "bin" / "daphne"), "-b", "127.0.0.1", "-p", str(port), "hostsite.asgi:application"],
            cwd=host.site, env=host_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the host's daphne exited: {log_path.read_text()[-3000:]}"
            if ext.port_open("127.0.0.1", port, timeout=0.2):
                break
            assert time.monotonic() < deadline, f"the host's daphne did not start: {log_path.read_text()[-3000:]}"
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# --- The test ---------------------------------------------------------------------------------------


def _get_json(url: str, headers: dict) -> tuple[int, dict]:
    with urlopen(Request(url, headers=headers), timeout=TIMEOUT) as r:
        return r.status, json.loads(r.read())


async def _frames_until(ws, title: str) -> list[dict]:
    """Frames up to and including the notification titled ``title``."""
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        frames.append(frame)
        if frame["type"] == "notification.created" and frame["notification"]["title"] == title:
            return frames


async def _exercise(server_url: str, user: dict, send) -> tuple[list[dict], list[dict], int]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws_url = server_url.replace("http://", "ws://") + "/inbox/ws/notifications/"
    by_token = await connect(ws_url, origin=server_url, subprotocols=["bearer", user["token"]], open_timeout=TIMEOUT)
    by_session = await connect(ws_url, origin=server_url, additional_headers={"Cookie": f"sessionid={user['session']}"}, open_timeout=TIMEOUT)
    try:
        for ws in (by_token, by_session):
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "sync.done"
        await asyncio.to_thread(send)
        token_frames = await _frames_until(by_token, "last")
        session_frames = await _frames_until(by_session, "last")
    finally:
        await by_token.close()
        await by_session.close()
    refused = await connect(ws_url, origin=server_url, subprotocols=["bearer", "not-a-token"], open_timeout=TIMEOUT)
    try:
        await asyncio.wait_for(refused.recv(), TIMEOUT)
        code = None
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
    return token_frames, session_frames, code


def test_a_host_project_with_uuid_users_receives_a_committed_notify_on_its_socket_and_nothing_of_a_rolled_back_one(
    host, host_env, host_server
):
    user = host.script(MAKE_USER, host_env)
    sent = {}

    def send():
        sent.update(host.script(SEND, host_env))

    token_frames, session_frames, bad_token_close = asyncio.run(_exercise(host_server, user, send))

    # Stored: the committed sends and one row for the retried key; nothing of the rolled-back one, nor of the refused one.
    assert sent["titles"] == ["committed", "last"]
    assert sent["retried"] == sent["last"]
    assert sent["refused"] is True
    # Both sockets (the host's JWT, the host's session cookie) got exactly the committed ones, in order.
    for frames in (token_frames, session_frames):
        created = [f["notification"] for f in frames if f["type"] == "notification.created"]
        assert [n["title"] for n in created] == ["committed", "last"]
        assert [n["id"] for n in created] == [sent["first"], *sent["last"]]
        assert {n["recipient"] for n in created} == {user["pk"]}  # the UUID, as a JSON string
        assert created[0]["data"] == {"order": 5} and created[0]["link"] == "/orders/5"
    assert bad_token_close == 4401

    # The REST API under the host's prefix, with the host's own authentication: its JWT and its session.
    for headers in ({"Authorization": f"Bearer {user['token']}"}, {"Cookie": f"sessionid={user['session']}"}):
        status, page = _get_json(f"{host_server}/inbox/api/notifications/", headers)
        assert status == 200
        assert [n["title"] for n in page["results"]] == ["last", "committed"]
        assert {n["recipient"] for n in page["results"]} == {user["pk"]}
