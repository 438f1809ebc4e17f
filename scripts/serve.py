#!/usr/bin/env python3
"""
One unit of the deployment: the server command given (daphne) and, beside it, the fallbacks'
worker (``python manage.py inbox_worker``). ``make run`` and the Dockerfile's CMD start it:

    python scripts/serve.py daphne -b 0.0.0.0 -p 8000 notifications_site.asgi:application

- SIGTERM or SIGINT (``docker stop``, Ctrl-C) goes to both, once; each finishes what it has in
  hand (daphne its connections, the worker its task). Past ``INBOX_STOP_GRACE_SECONDS`` (20) they
  are killed.
- The server stops: the worker is stopped too, and this exits with the server's status.
- The worker stops on its own (the database not there yet, a crash): it is started again after a
  pause that doubles from 1 s up to 30 s, and the server keeps serving. The schedule is rows in the
  database, so a restarted worker loses nothing.
- ``INBOX_WORKER=0``: the server alone (the workers run elsewhere: ``python manage.py inbox_worker``).
  ``INBOX_WORKER_ARGS``: options for the worker (``--interval 0.5``).

Standard library only, and nothing of Django: the two processes import it, this one supervises.
The children run in their own process group, so a Ctrl-C in the terminal reaches them once, from here
(the task worker takes a second SIGINT as "abandon the task in hand").
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MANAGE = os.path.join(os.path.dirname(HERE), "manage.py")


def log(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, start_new_session=True)


def status_of(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with_worker = os.environ.get("INBOX_WORKER", "1").strip().lower() not in ("0", "false", "no", "off")
    worker_command = [sys.executable, MANAGE, "inbox_worker", *shlex.split(os.environ.get("INBOX_WORKER_ARGS", ""))]
    grace = float(os.environ.get("INBOX_STOP_GRACE_SECONDS", "20"))

    stopping: list[int] = []

    def on_signal(signum, frame) -> None:
        if not stopping:
            stopping.append(signum)
            for p in (server, worker):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)

    server: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = start(argv)
    worker = start(worker_command) if with_worker else None
    log(f"{os.path.basename(argv[0])} (pid {server.pid})" + (f" and the fallbacks' worker (pid {worker.pid})" if worker else ", no worker (INBOX_WORKER=0)"))
    worker_started, pause, restart_at = time.monotonic(), 1.0, None
    while server.poll() is None and not stopping:
        if worker is not None and worker.poll() is not None and restart_at is None:
            if time.monotonic() - worker_started > 60:
                pause = 1.0
            log(f"the worker exited ({status_of(worker.returncode)}); starting it again in {pause:.0f} s")
            restart_at, pause = time.monotonic() + pause, min(pause * 2, 30.0)
        if restart_at is not None and time.monotonic() >= restart_at and not stopping:
            worker, worker_started, restart_at = start(worker_command), time.monotonic(), None
        time.sleep(0.2)

    if not stopping:  # the server stopped on its own: so does the worker
        log(f"the server exited ({status_of(server.returncode)}); stopping the worker")
        stopping.append(0)
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in (server, worker):
        if p is None:
            continue
        try:
            p.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log(f"process {p.pid} still running after {grace:.0f} s: killed")
            p.kill()
            p.wait()
    return status_of(server.returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
