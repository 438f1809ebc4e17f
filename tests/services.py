"""
Real external services for tests: Redis and daphne processes.

A test that needs Redis or PostgreSQL talks to the real server. When it is not reachable the test
is skipped with the reason, except in CI (CI=true) or with INBOX_REQUIRE_SERVICES=1, where it fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def services_required() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"} or os.environ.get("INBOX_REQUIRE_SERVICES") == "1"


def unavailable(reason: str):
    """Skip on a laptop without the service; fail in CI."""
    if services_required():
        pytest.fail(f"{reason} (CI requires it: start the service, see .ci/run)")
    pytest.skip(reason)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_available(url: str = TEST_REDIS_URL) -> bool:
    u = urlparse(url)
    return port_open(u.hostname or "127.0.0.1", u.port or 6379)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """The pids of a process' children (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def database_url_for_subprocess() -> str:
    """The URL of the database the current test uses (pytest-django's test database)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if settings.DATABASE_IS_SQLITE:
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def serve_script():
    """scripts/serve.py as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("inbox_serve_script", ROOT / "scripts" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SERVER_COMMANDS = {
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "--access-log", "-"],
    # uvicorn as the image's scripts/serve.py runs it (its DEFAULT_SERVER, less the interpreter), one process, no worker.
    "uvicorn": [*serve_script().DEFAULT_SERVER[1:], "--host", "127.0.0.1", "--port", "{port}"],
    # What the image runs: scripts/serve.py supervising uvicorn (INBOX_SERVER_PROCESSES of them on one port).
    "serve": ["scripts/serve.py", "--host", "127.0.0.1", "--port", "{port}"],
    # The same supervisor running daphne (still supported).
    "serve-daphne": ["scripts/serve.py", sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}"],
}


class DaphneServer:
    """
    A real daphne process (or, with ``server="uvicorn"``, uvicorn; with ``server="serve"``, the image's
    scripts/serve.py and its uvicorn processes; ``"serve-daphne"``, the same with daphne) serving
    notifications_site.asgi on 127.0.0.1.
    """

    def __init__(
        self, *, redis_url: str | None, env: dict | None = None, port: int | None = None, log_dir: Path | None = None,
        server: str = "daphne",
    ):
        self.port = port or free_port()
        self.redis_url = redis_url
        self.extra_env = env or {}
        self.server = server
        self.proc: subprocess.Popen | None = None
        self.log_path = (log_dir or Path("/tmp")) / f"{server}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/notifications/"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "notifications_site.settings",
                "DJANGO_DEBUG": "1",
                "DATABASE_URL": database_url_for_subprocess(),
                "INBOX_THROTTLE_SEND": "100000/s",
                "INBOX_THROTTLE_READ": "100000/s",
                "INBOX_THROTTLE_AUTH": "100000/s",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("REDIS_URL", None)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 20.0) -> "DaphneServer":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, *(a.format(port=self.port) for a in SERVER_COMMANDS[self.server]), "notifications_site.asgi:application"],
            cwd=ROOT,
            env=self.env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server} exited with {self.proc.returncode}: {self.read_log()[-2000:]}")
            try:
                with urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.server} did not start in {timeout}s: {self.read_log()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None):
            self.log.close()
            self.log = None

    def restart(self) -> "DaphneServer":
        self.stop()
        return self.start()

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
