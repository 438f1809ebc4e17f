"""
The server stack of the benchmark: a private PostgreSQL cluster and redis-server, N ASGI server
processes for the sockets (daphne; uvicorn as an option) and M for the REST API (uvicorn; daphne as
an option) on distinct ports, and meters for the CPU and memory of every part.

Everything is started here and stopped at the end (an existing PostgreSQL or Redis can be given instead).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import urlopen

import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def stop_process(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class PrivateRedis:
    """A redis-server of our own (no persistence) on a free port: FLUSHALL-safe and measurable."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; pass --redis-url to use an existing Redis")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--maxclients", "20000", "--dir", str(self.workdir)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for_port(self.port, 10, self.proc, self.log_path)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []


class PrivatePostgres:
    """
    A PostgreSQL cluster of our own (initdb on first use, data kept between runs so the large
    inboxes are seeded once), on a free port. As root it runs as the ``postgres`` OS user, since
    PostgreSQL refuses to run as root. Settings are the defaults (durable commits) except
    max_connections, so a connection leak shows up as a count instead of failing other users.
    """

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self, datadir: Path, port: int | None = None) -> None:
        self.datadir = datadir
        self.port = port or free_port()
        self.log_path = datadir.parent / (datadir.name + ".log")

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/inbox_bench"

    def start(self) -> "PrivatePostgres":
        binary = self.BIN if self.BIN.exists() else Path(shutil.which("pg_ctl") or "/nonexistent").parent
        if not (binary / "initdb").exists():
            raise RuntimeError("PostgreSQL server binaries not found; pass --database-url to use an existing server")
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.datadir.parent, "postgres")
        if not (self.datadir / "PG_VERSION").exists():
            self._run([str(binary / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp -c max_connections=1000 -c shared_buffers=256MB"
        self._run([str(binary / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start"])
        self.binary = binary
        return self

    def stop(self) -> None:
        try:
            self._run([str(self.binary / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"])
        except Exception:
            pass

    def _main(self) -> psutil.Process | None:
        try:
            return psutil.Process(int((self.datadir / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, psutil.Error):
            return None

    def cpu_seconds(self) -> float:
        """All CPU the cluster used so far, including backends that already exited (reaped children)."""
        main = self._main()
        if main is None:
            return 0.0
        try:
            t = main.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            for c in main.children():
                try:
                    total += _cpu(c)
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return 0.0

    def backends(self, dbname: str = "inbox_bench") -> int:
        main = self._main()
        n = 0
        for c in main.children() if main else []:
            try:
                if f" {dbname} " in " ".join(c.cmdline()) + " ":
                    n += 1
            except psutil.Error:
                pass
        return n

    @property
    def pids(self) -> list[int]:
        """Every process of the cluster (postmaster, backends, background workers)."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
            main = psutil.Process(pid)
            return [pid] + [c.pid for c in main.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return []


@dataclass
class ServerProcess:
    kind: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        """This process and its children (scripts/serve.py's daphne processes and worker, granian's worker)."""
        try:
            return [self.proc.pid, *(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))]
        except psutil.Error:
            return [self.proc.pid]


#: Kinds that are one scripts/serve.py running ``workers`` server processes on one port.
SUPERVISED = ("serve", "serve-daphne")


@dataclass
class Stack:
    """
    N server processes behind distinct ports; clients spread sockets and requests over them. Kind
    ``serve`` is the image's deployment instead: one scripts/serve.py on one port, running N uvicorn
    processes on it (INBOX_SERVER_PROCESSES, SO_REUSEPORT) and the fallbacks' worker beside them;
    ``serve-daphne`` the same with daphne.
    With ``http_workers``, the REST API has processes of its own (``http_kind``), as behind a proxy
    that routes /ws/ to the WebSocket servers and the rest to the HTTP servers: the N processes then
    serve the WebSockets only.
    """

    kind: str
    workers: int
    env: dict
    workdir: Path
    http_kind: str = ""
    http_workers: int = 0
    servers: list[ServerProcess] = field(default_factory=list)
    http_servers: list[ServerProcess] = field(default_factory=list)

    def command(self, port: int, kind: str | None = None) -> list[str]:
        """The command line of one server of ``kind`` on ``port``."""
        app = "notifications_site.asgi:application"
        kind = kind or self.kind
        if kind == "daphne":
            # -v 0: no access log (daphne logs every request to stdout at verbosity 1).
            # --websocket_connect_timeout 30: as the image (a reconnect storm waits for its turn, realtime/admission.py).
            return [sys.executable, "-m", "daphne", "-v", "0", "--websocket_connect_timeout", "30", "-b", "127.0.0.1", "-p", str(port), app]
        if kind == "serve":  # the image's command: scripts/serve.py's default server (uvicorn), no access log
            return [sys.executable, str(ROOT / "scripts" / "serve.py"), "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        if kind == "serve-daphne":  # the same supervisor running daphne, as the image did before finding 79
            return [sys.executable, str(ROOT / "scripts" / "serve.py"), sys.executable, "-m", "daphne", "-v", "0",
                    "--websocket_connect_timeout", "30", "-b", "127.0.0.1", "-p", str(port), app]
        if kind == "granian":  # a substrate measured for issue 22 (not in requirements.txt: pip install granian)
            return [str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1", "--loop", "uvloop", "--log-level", "warning", "--no-access-log", app]
        if kind == "uvicorn":
            return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                    "--log-level", "warning", "--lifespan", "off", "--loop", "uvloop", "--http", "httptools",
                    "--ws", os.environ.get("BENCH_UVICORN_WS", "websockets-sansio"), "--ws-per-message-deflate", "false", app]
        raise ValueError(f"unknown server {kind!r}")

    def _spawn(self, kind: str, port: int | None = None) -> ServerProcess:
        port = port or free_port()
        log_path = self.workdir / f"{kind}-{port}.log"
        log = open(log_path, "ab")
        proc = subprocess.Popen(self.command(port, kind), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        return ServerProcess(kind, port, proc, log_path)

    def start(self, timeout: float = 60.0) -> "Stack":
        supervised = self.kind in SUPERVISED
        if supervised:
            self.env = {**self.env, "INBOX_SERVER_PROCESSES": str(self.workers)}
        self.servers = [self._spawn(self.kind) for _ in range(1 if supervised else self.workers)]
        self.http_servers = [self._spawn(self.http_kind or self.kind) for _ in range(self.http_workers)]
        for s in self.servers + self.http_servers:
            wait_for_port(s.port, timeout, s.proc, s.log_path)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urlopen(f"http://127.0.0.1:{s.port}/healthz", timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or s.proc.poll() is not None:
                    raise RuntimeError(f"{s.kind} on {s.port} is not healthy:\n{s.log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        for s in self.servers + self.http_servers:
            stop_process(s.proc)
        self.servers = []
        self.http_servers = []

    @property
    def ports(self) -> list[int]:
        """The WebSocket servers' ports."""
        return [s.port for s in self.servers]

    @property
    def http_ports(self) -> list[int]:
        """Where the REST API is: its own processes, or the same as the WebSockets."""
        return [s.port for s in self.http_servers] or self.ports

    @property
    def pids(self) -> list[int]:
        return [pid for s in self.servers + self.http_servers if s.proc.poll() is None for pid in s.pids]

    def alive(self) -> bool:
        return all(s.proc.poll() is None for s in self.servers + self.http_servers)

    def log_tail(self, n: int = 2000) -> str:
        return "\n".join(
            f"--- {s.log_path.name}\n{s.log_path.read_text(errors='replace')[-n:]}" for s in self.servers + self.http_servers
        )


# --- Meters -------------------------------------------------------------------------------------


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


class CpuMeter:
    """
    CPU seconds used by groups of processes between start() and stop(): the load generator (this
    process), the servers, Redis, and the PostgreSQL backends serving the bench database, plus the
    whole machine's busy time (other helpers' work shows up as 'other').
    """

    def __init__(self, groups: dict[str, callable], totals: dict[str, callable] | None = None) -> None:
        # group name -> function returning the current list of pids of that group
        self.groups = groups
        # group name -> function returning the group's cumulative CPU seconds (overrides pids)
        self.totals = totals or {}

    def _sample(self) -> dict:
        out = {"wall": time.monotonic(), "self": _self_cpu(), "procs": {}}
        out["totals"] = {name: fn() for name, fn in self.totals.items()}
        for name, pids_fn in self.groups.items():
            if name in self.totals:
                continue
            seen = {}
            for pid in pids_fn():
                try:
                    p = psutil.Process(pid)
                    seen[pid] = (p.create_time(), _cpu(p))
                except psutil.Error:
                    pass
            out["procs"][name] = seen
        t = psutil.cpu_times()
        out["sys_busy"] = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
        return out

    def start(self) -> None:
        self.t0 = self._sample()

    def stop(self) -> dict:
        t1 = self._sample()
        wall = t1["wall"] - self.t0["wall"]
        result = {"wall_s": round(wall, 3), "loadgen_cpu_s": round(t1["self"] - self.t0["self"], 3)}
        ours = result["loadgen_cpu_s"]
        for name in self.groups:
            if name in self.totals:
                total = t1["totals"][name] - self.t0["totals"][name]
                result[f"{name}_cpu_s"] = round(total, 3)
                ours += total
                continue
            before, after = self.t0["procs"][name], t1["procs"][name]
            total = 0.0
            for pid, (created, cpu) in after.items():
                prev = before.get(pid)
                # A process born during the window counts whole.
                total += cpu - prev[1] if prev and prev[0] == created else cpu
            result[f"{name}_cpu_s"] = round(total, 3)
            ours += total
        busy = t1["sys_busy"] - self.t0["sys_busy"]
        result["machine_busy_cpu_s"] = round(busy, 3)
        result["other_cpu_s"] = round(max(0.0, busy - ours), 3)
        if wall > 0:
            for key in list(result):
                if key.endswith("_cpu_s"):
                    result[key.replace("_cpu_s", "_cpu_pct")] = round(100 * result[key] / wall, 1)
        result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        return result


def _self_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


def postgres_backend_pids(dbname: str) -> list[int]:
    """PostgreSQL backends connected to our database (their process title names it)."""
    pids = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if cmd.startswith("postgres:") and f" {dbname} " in f" {cmd} ":
            pids.append(p.pid)
    return pids


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="inbox-bench-"))
