"""
scripts/serve.py, what ``make run`` and the Docker image start: the server and the real
``manage.py inbox_worker`` beside it, stopped together. The server here is a stand-in process
(the point is the supervision); the worker is the real one, on the test database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import services as ext

ROOT = Path(__file__).resolve().parents[2]

# A server that serves until SIGTERM, then exits 0 (as daphne does), or exits 3 on its own after "STOP_AFTER" seconds.
STAND_IN = (
    "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
    "print('server up', flush=True)\n"
    "time.sleep(float(os.environ.get('STOP_AFTER', '120')))\n"
    "sys.exit(3)\n"
)


class Serve:
    def __init__(self, log: Path, **env: str):
        self.log_path = log
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "scripts/serve.py", sys.executable, "-c", STAND_IN],
            cwd=ROOT,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "notifications_site.settings",
                "DATABASE_URL": ext.database_url_for_subprocess(),
                "PYTHONUNBUFFERED": "1",
                "INBOX_WORKER_ARGS": "--interval 0.2 --no-startup-delay",
                **env,
            },
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, needle: str, count: int = 1, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < count:
            assert self.proc.poll() is None or self.text().count(needle) >= count, self.text()
            assert time.monotonic() < deadline, f"{needle!r} x{count} not seen:\n{self.text()}"
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def serve_factory(transactional_db, tmp_path):
    if not Path("/proc").exists():
        ext.unavailable("needs /proc to see the supervised processes")
    started: list[Serve] = []

    def make(**env) -> Serve:
        s = Serve(tmp_path / f"serve-{len(started)}.log", **env)
        started.append(s)
        return s

    yield make
    for s in started:
        s.close()


@pytest.mark.e2e
def test_sigterm_stops_the_server_and_the_worker_cleanly_and_together(serve_factory):
    serve = serve_factory()
    serve.wait_for("server up")
    serve.wait_for("Starting worker")
    children = ext.children_of(serve.proc.pid)
    assert len(children) == 2
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(30) == 0
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]  # both exited, and were reaped
    assert "shutting down gracefully" in serve.text()  # the worker was asked once, and finished


@pytest.mark.e2e
def test_when_the_server_exits_the_worker_is_stopped_and_its_status_is_the_exit_status(serve_factory):
    serve = serve_factory(STOP_AFTER="4")
    serve.wait_for("Starting worker")
    assert serve.proc.wait(30) == 3
    assert ") exited (3); stopping the worker" in serve.text()


@pytest.mark.e2e
def test_a_worker_that_exits_is_started_again_and_the_server_keeps_serving(serve_factory):
    serve = serve_factory(INBOX_WORKER_ARGS="--batch --no-startup-delay")  # --batch: exits when nothing is due
    serve.wait_for("the worker exited (0); starting it again in 1 s")
    serve.wait_for("Starting worker", count=2)
    assert serve.proc.poll() is None
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(30) == 0


@pytest.mark.e2e
def test_inbox_worker_0_runs_the_server_alone(serve_factory):
    serve = serve_factory(INBOX_WORKER="0")
    serve.wait_for("server up")
    assert len(ext.children_of(serve.proc.pid)) == 1
    serve.proc.send_signal(signal.SIGINT)
    assert serve.proc.wait(30) == 0
