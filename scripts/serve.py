#!/usr/bin/env python3
"""
One unit of the deployment: the server (uvicorn, or the command given), as one process or several
on the same port, and, beside it, the fallbacks' worker (``python manage.py inbox_worker``).
``make run`` and the Dockerfile's CMD start it:

    python scripts/serve.py --host 0.0.0.0 --port 8000          # uvicorn, as DEFAULT_SERVER below
    python scripts/serve.py daphne -b 0.0.0.0 -p 8000 notifications_site.asgi:application

- With no command (only ``--host``/``--port`` and other options of uvicorn's), the server is uvicorn
  with ``DEFAULT_SERVER``'s options: its sans-I/O WebSockets (server/patches/uvicorn.py bounds what a
  client may make it hold), uvloop and httptools, no proxy headers (the application reads them,
  trusting only ``INBOX_NUM_PROXIES``), and 10 s for the sockets' 1012 and the requests in flight on
  SIGTERM (bench/JOURNAL.md, finding 79).
- ``INBOX_SERVER_PROCESSES``: how many server processes share the port. Default: the CPUs this
  process may use (its affinity, capped by a cgroup CPU quota) when the processes share a channel layer (``REDIS_URL`` or ``REDIS_URLS`` set),
  else 1 (without Redis each process has its own in-memory layer: a send would only reach the
  sockets of the process that stored it). With more than one, this opens one listening socket per
  process on the ``-b``/``-p`` address with ``SO_REUSEPORT`` (the kernel spreads new connections
  over them) and hands each to its daphne with ``--fd``. A closed socket's connections go to the
  others, so a process that stops takes no new connection with it.
- SIGTERM or SIGINT (``docker stop``, Ctrl-C) goes to every child, once; each finishes what it has
  in hand (daphne closes its sockets with 1012, the worker ends its task). Past
  ``INBOX_STOP_GRACE_SECONDS`` (20) they are killed.
- A server process stops on its own: the others and the worker are stopped too, and this exits with
  that process' status (the container's restart policy starts it again; clients reconnect and catch up).
- The worker stops on its own (the database not there yet, a crash): it is started again after a
  pause that doubles from 1 s up to 30 s, and the servers keep serving. The schedule is rows in the
  database, so a restarted worker loses nothing.
- ``INBOX_WORKER=0``: the servers alone (the workers run elsewhere: ``python manage.py inbox_worker``).
  ``INBOX_WORKER_ARGS``: options for the worker (``--interval 0.5``).

Standard library only, and nothing of Django: the children import it, this one supervises.
The children run in their own process group, so a Ctrl-C in the terminal reaches them once, from here
(the task worker takes a second SIGINT as "abandon the task in hand").
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MANAGE = os.path.join(os.path.dirname(HERE), "manage.py")


APP = "notifications_site.asgi:application"
APP_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # an ASGI application's import path
DEFAULT_SERVER = [
    sys.executable, "-m", "uvicorn",
    "--ws", "websockets-sansio", "--ws-max-size", "1048576", "--ws-per-message-deflate", "false",
    "--loop", "uvloop", "--http", "httptools", "--lifespan", "off", "--no-proxy-headers",
    "--timeout-graceful-shutdown", "10",
]


def server_command(argv: list[str]) -> list[str]:
    """
    The server command line: ``argv`` itself (a command), or the default server with ``argv``'s options and,
    unless ``argv`` names one (``module:attribute``), this project's application.
    """
    if argv and not argv[0].startswith("-"):
        if APP_PATH.match(argv[0]):
            raise UsageError(f"{argv[0]} is an application, not a command: give it after the options (--port 8000 {argv[0]})")
        return argv
    return [*DEFAULT_SERVER, *argv] + ([] if any(APP_PATH.match(arg) for arg in argv) else [APP])


class UsageError(Exception):
    pass


def log(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


def start(command: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen(command, start_new_session=True, pass_fds=pass_fds)


def status_of(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says


def _flag(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in ("0", "false", "no", "off", "")


def usable_cpus() -> int:
    """The CPUs this process may run on, capped by a cgroup v2 CPU quota (``docker run --cpus 2``)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, -(-int(quota) // int(period)))  # a quota of 1.5 CPUs: 2 processes
    except (OSError, ValueError):
        pass
    return max(1, count)


def server_processes() -> int:
    raw = os.environ.get("INBOX_SERVER_PROCESSES", "").strip()
    shared_layer = bool(os.environ.get("REDIS_URL", "").strip() or os.environ.get("REDIS_URLS", "").strip())
    if not raw:
        return usable_cpus() if shared_layer else 1
    try:
        count = int(raw)
    except ValueError:
        raise UsageError(f"INBOX_SERVER_PROCESSES must be a whole number from 1 to 64, not {raw!r}") from None
    if not 1 <= count <= 64:
        raise UsageError(f"INBOX_SERVER_PROCESSES must be a whole number from 1 to 64, not {count}")
    if count > 1 and not shared_layer:
        raise UsageError(
            f"INBOX_SERVER_PROCESSES={count} needs REDIS_URL (or REDIS_URLS): without a shared channel layer a send "
            "would reach only the sockets of the process that stored it"
        )
    return count


def split_bind(argv: list[str]) -> tuple[str, int, list[str]]:
    """The host and port of a daphne or uvicorn command line, and the command without them."""
    host, port, rest, i = "127.0.0.1", 8000, [], 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if name in ("-b", "--bind", "--host", "-p", "--port"):
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else None)
            if value is None:
                raise UsageError(f"{name} needs a value")
            if name in ("-b", "--bind", "--host"):
                host = value
            else:
                try:
                    port = int(value)
                except ValueError:
                    raise UsageError(f"{name} must be a port number, not {value!r}") from None
            i += 1 if eq else 2
            continue
        if name in ("-u", "--unix-socket", "--uds", "--fd", "-e", "--endpoint"):
            raise UsageError(f"{name} cannot be shared by several server processes: bind with --host and --port, or set INBOX_SERVER_PROCESSES=1")
        rest.append(arg)
        i += 1
    return host, port, rest


def listening_socket(host: str, port: int) -> socket.socket:
    """One of the port's listening sockets: SO_REUSEPORT, so each server process has its own accept queue."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot bind {host!r} ({exc}); several server processes need an IPv4 address") from None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Accepted connections inherit it (Linux). uvicorn takes a --fd for a Unix socket and so never sets it: its
    # response head and body then met delayed ACKs, 40 ms a request (bench/JOURNAL.md, finding 79).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(infos[0][4])
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(socket.SOMAXCONN)
    sock.set_inheritable(True)
    return sock


def server_commands(argv: list[str], count: int) -> list[tuple[list[str], tuple[int, ...]]]:
    """The command of each server process, and the descriptor it inherits (none for one process)."""
    if count == 1:
        return [(argv, ())]
    host, port, rest = split_bind(argv)
    fds = [listening_socket(host, port).detach() for _ in range(count)]
    return [([*rest, "--fd", str(fd)], (fd,)) for fd in fds]


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 0
    with_worker = _flag("INBOX_WORKER", "1")
    worker_command = [sys.executable, MANAGE, "inbox_worker", *shlex.split(os.environ.get("INBOX_WORKER_ARGS", ""))]
    grace = float(os.environ.get("INBOX_STOP_GRACE_SECONDS", "20"))
    try:
        argv = server_command(argv)
        commands = server_commands(argv, server_processes())
    except UsageError as exc:
        log(str(exc))
        return 2

    stopping: list[int] = []
    servers: list[subprocess.Popen] = []
    worker: subprocess.Popen | None = None

    def on_signal(signum, frame) -> None:
        if not stopping:
            stopping.append(signum)
            for p in [*servers, worker]:
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    for command, fds in commands:
        try:
            servers.append(start(command, pass_fds=fds))
        except OSError as exc:  # no such command, not executable
            log(f"cannot start {command[0]}: {exc.strerror or exc}")
            for p in servers:
                p.send_signal(signal.SIGTERM)
                p.wait()
            return 127
        for fd in fds:
            os.close(fd)  # the child has it: a server that stops closes the port's socket it had
    worker = start(worker_command) if with_worker else None
    name = argv[2] if len(argv) > 2 and argv[1] == "-m" else os.path.basename(argv[0])
    what = f"{name} (pid {servers[0].pid})" if len(servers) == 1 else f"{len(servers)} {name} processes on one port (pids {', '.join(str(s.pid) for s in servers)})"
    log(what + (f" and the fallbacks' worker (pid {worker.pid})" if worker else ", no worker (INBOX_WORKER=0)"))
    worker_started, pause, restart_at = time.monotonic(), 1.0, None
    exited: subprocess.Popen | None = None
    while not stopping:
        exited = next((s for s in servers if s.poll() is not None), None)
        if exited is not None:
            break
        if worker is not None and worker.poll() is not None and restart_at is None:
            if time.monotonic() - worker_started > 60:
                pause = 1.0
            log(f"the worker exited ({status_of(worker.returncode)}); starting it again in {pause:.0f} s")
            restart_at, pause = time.monotonic() + pause, min(pause * 2, 30.0)
        if restart_at is not None and time.monotonic() >= restart_at and not stopping:
            worker, worker_started, restart_at = start(worker_command), time.monotonic(), None
        time.sleep(0.2)

    if exited is not None and not stopping:  # a server stopped on its own: so does everything else
        others = "the other servers and the worker" if len(servers) > 1 else "the worker"
        log(f"the server (pid {exited.pid}) exited ({status_of(exited.returncode)}); stopping {others}")
        stopping.append(0)
        for p in [*servers, worker]:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in [*servers, worker]:
        if p is None:
            continue
        try:
            p.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log(f"process {p.pid} still running after {grace:.0f} s: killed")
            p.kill()
            p.wait()
    if exited is not None:
        return status_of(exited.returncode)
    # uvicorn ends itself with the SIGTERM it was sent, once it has shut down: that is a clean stop.
    return max(0 if s.returncode == -signal.SIGTERM else status_of(s.returncode) for s in servers)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
