#!/usr/bin/env python
"""
Scale on one box (issue 22): up to N idle authenticated sockets against the image's deployment
(scripts/serve.py: several uvicorn processes sharing one SO_REUSEPORT port, the fallbacks' worker
beside them), held by several load-generator processes with several 127.0.0.x source addresses.

    python bench/scale.py --sockets 50000 --levels 1000 5000 10000 25000 50000 \\
        --server-processes 4 --loadgen-processes 4 --source-hosts 8 [--sends-per-level 2000]
    python bench/scale.py --quick            # 2,000 sockets, levels 500 and 2,000, 2 + 2 processes

At each level (ascending): the sockets grow to that many (connects/s, connect p50/p99, server CPU
per connect, server RSS growth per added socket), then a burst of single-recipient REST sends (16 in
flight) to random online users (delivered/s, end-to-end p50/p99, lost, duplicated). At the top: a
broadcast to every socket (as many requests as INBOX["MAX_RECIPIENTS"] needs), then a restart storm:
every server process is stopped (SIGTERM: sockets close with 1012), notifications are stored through
the Python API while they are down, the deployment starts again on the same port, and every client
reconnects on its own with ``?after=<newest id it saw>`` after inbox-client.js's delays.

Prints a table and writes bench/results/scale-latest.json plus a dated copy (--quick:
scale-latest-quick.json). bench/README.md, "Scale: bench/scale.py", says what each figure is.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import multiprocessing as mp
import os
import random
import resource
import secrets
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from loadgen import HttpConn, Pool, percentile, run_async, run_requests, summary_ms  # noqa: E402
from run import (  # noqa: E402
    column_table, count_stored, django_setup, ensure_database, ensure_users, forget_earlier_runs, git_commit, machine_info,
    max_notification_id, metric_rows, mint_tokens, private_database, raise_nofile, server_env, verdicts, write_results,
)
from scenarios import SEND_PATH, close_conns, ms  # noqa: E402
from stack import (  # noqa: E402
    CpuMeter, PrivatePostgres, PrivateRedis, ServerProcess, Stack, free_port, make_workdir, postgres_backend_pids, rss_bytes,
    stop_process,
)

FULL = {"sockets": 50_000, "levels": [1000, 5000, 10_000, 25_000, 50_000], "server_processes": 4, "loadgen_processes": 4,
        "source_hosts": 8, "sends_per_level": 2000, "downtime_sends": 1000}
QUICK = {"sockets": 2000, "levels": [500, 2000], "server_processes": 2, "loadgen_processes": 2, "source_hosts": 2,
         "sends_per_level": 300, "downtime_sends": 200}

TARGETS = {  # issue 22
    "broadcast.time_to_all_ms": ("<=", 3000),
    "broadcast.lost": ("==", 0),
    "restart.time_to_all_synced_ms": ("<=", 30_000),
    "restart.time_to_all_downtime_ms": ("<=", 30_000),
    "restart.lost": ("==", 0),
    "restart.duplicated": ("==", 0),
}

PORTS_PER_SOURCE_ADDRESS = 28_000  # the ephemeral range 32768-60999 of one 127.0.0.x address
STOP_GRACE_S = 20  # scripts/serve.py's INBOX_STOP_GRACE_SECONDS: it kills what is still running after it
# inbox-client.js's defaults (minDelay, maxDelay): the delays a client reconnects after.
MIN_DELAY_S, MAX_DELAY_S = 0.5, 30.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smaller defaults (development): {QUICK}")
    p.add_argument("--sockets", type=int, help=f"sockets at the top level, one user each (default {FULL['sockets']:,})")
    p.add_argument("--levels", type=int, nargs="+", help=f"socket counts measured, ascending (default {FULL['levels']}); "
                   "--sockets is always the last")
    p.add_argument("--server-processes", type=int, help=f"server processes of scripts/serve.py (default {FULL['server_processes']})")
    p.add_argument("--loadgen-processes", type=int, help=f"load-generator processes (default {FULL['loadgen_processes']})")
    p.add_argument("--source-hosts", type=int, help=f"127.0.0.x source addresses of the sockets (default {FULL['source_hosts']})")
    p.add_argument("--sends-per-level", type=int, help=f"single-recipient sends per level (default {FULL['sends_per_level']:,})")
    p.add_argument("--send-concurrency", type=int, default=16, help="sends in flight (default 16, as run.py's directed)")
    p.add_argument("--connect-concurrency", type=int, default=64,
                   help="sockets connecting at once while a level grows, over all load generators (default 64)")
    p.add_argument("--downtime-sends", type=int, help=f"notifications stored while the servers are down (default {FULL['downtime_sends']:,})")
    p.add_argument("--broadcast-chunk", type=int,
                   help="recipients per broadcast request (default: the service's INBOX['MAX_RECIPIENTS']; raise both together "
                        "with --server-env INBOX_MAX_RECIPIENTS=N)")
    p.add_argument("--restart-timeout", type=float, default=120.0,
                   help="seconds after the servers accept again to wait for every socket and downtime notification (default 120)")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""),
                   help="use this PostgreSQL database (created and migrated if missing) instead of a private cluster")
    p.add_argument("--pg-datadir", default=os.environ.get("BENCH_PG_DATADIR", "/tmp/inbox-bench-pg/data"),
                   help="data directory of the private PostgreSQL cluster (kept between runs; run.py's by default)")
    p.add_argument("--settings", default="notifications_site.settings", help="DJANGO_SETTINGS_MODULE of the servers")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the servers")
    p.add_argument("--seed", type=int, default=22, help="seed of the random recipients and reconnect delays")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument("--output", default=str(HERE / "results"), help="directory of scale-latest.json and the dated copies")
    p.add_argument("--no-save", action="store_true", help="print only, write no result files")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    if args.sockets is not None and args.levels is None:  # the default curve up to the sockets asked for
        args.levels = [n for n in defaults["levels"] if n < args.sockets]
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if any(n < 1 or n > args.sockets for n in args.levels):
        p.error("every level must be between 1 and --sockets")
    args.levels = sorted(set(args.levels) | {args.sockets})
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_loadgen = math.ceil(args.sockets / args.loadgen_processes)
    if per_loadgen + 100 > nofile:
        p.error(f"{per_loadgen:,} sockets per load generator over the open-file limit ({nofile:,}): more --loadgen-processes")
    # SO_REUSEPORT spreads connections by a hash, not evenly: leave a margin under the limit.
    if math.ceil(args.sockets / args.server_processes) * 1.1 + 500 > nofile:
        p.error(f"about {args.sockets // args.server_processes:,} sockets per server process, near the open-file limit "
                f"({nofile:,}): more --server-processes")
    if math.ceil(args.sockets / args.source_hosts) > PORTS_PER_SOURCE_ADDRESS:
        p.error(f"{math.ceil(args.sockets / args.source_hosts):,} sockets per source address: more --source-hosts")
    return args


# --- The load generators (each its own process) ---------------------------------------------------


def jitter(cap: float) -> float:
    """inbox-client.js's _jitter: a random delay in [cap/2, cap]."""
    return cap / 2 + random.random() * cap / 2


def error_kind(exc: Exception) -> str:
    """A failed connect's exception type, with the HTTP status or the close code it carried."""
    status = getattr(getattr(exc, "response", None), "status_code", None)  # websockets' InvalidStatus
    close = getattr(exc, "rcvd", None)  # ConnectionClosed: the server's close frame, if any
    code = status if status is not None else (close.code if close is not None else None)
    return type(exc).__name__ + (f" {code}" if code is not None else "")


class Clients:
    """
    One load-generator process: the sockets of the users ``first, first + step, ...`` (a loadgen.Pool
    with local indexes), each remembering the newest notification id it saw and reconnecting on its
    own when the server closes it. Commands come over ``conn`` as (name, args) and are answered
    (("ok", value) or ("error", traceback)) by the ``cmd_`` method of that name.
    """

    def __init__(self, conn, first: int, step: int, user_ids: list[int], tokens: list[str], port: int, source_hosts: int, seed: int) -> None:
        self.conn = conn
        self.first, self.step = first, step
        self.user_ids = user_ids
        self.pool = Pool([port], user_ids, tokens, source_hosts=source_hosts)
        self.pool.handler = self.on_frame
        self.newest = [0] * len(user_ids)
        # Frames of watched runs: key -> ([(user index, s, arrival, latency, catch-up, to its recipient)], {(socket, s)}).
        self.watched: dict[str, tuple[list, set]] = {}
        self.reconnecting: dict[int, asyncio.Task] = {}
        self.closes: dict[str, int] = {}  # close code -> sockets the server closed, since the last mark
        self.closed_total = 0
        self.attempts = 0
        self.connect_errors: dict[str, int] = {}
        self.synced_at: dict[int, float] = {}  # socket -> its first sync.done after the last mark
        self.stopping = False
        self.orphaned = False
        random.seed(seed * 1000 + first)

    def global_index(self, j: int) -> int:
        return self.first + j * self.step

    def on_frame(self, j: int, raw, t: float) -> None:
        f = orjson.loads(raw)
        if f.get("type") != "notification.created":
            return
        n = f["notification"]
        if n["id"] > self.newest[j]:
            self.newest[j] = n["id"]
        d = n.get("data")
        run = self.watched.get(d.get("k")) if isinstance(d, dict) else None
        if run is None:
            return
        s = d.get("s")
        run[0].append((self.global_index(j), s, t, t - d["t"] if "t" in d else None, bool(f.get("catchup")),
                       n["recipient"] == self.user_ids[j]))
        run[1].add((j, s))

    def keep(self, sock) -> None:
        """Watch an open socket: when the server closes it, it reconnects."""
        sock.task.add_done_callback(lambda _task, sock=sock: self.closed(sock))

    def closed(self, sock) -> None:
        j = sock.idx
        if self.stopping or self.pool.socks.get(j) is not sock:
            return  # closed by us (Pool.close pops it first)
        del self.pool.socks[j]
        code = str(sock.ws.close_code)  # None: dropped without a close frame
        self.closes[code] = self.closes.get(code, 0) + 1
        self.closed_total += 1
        self.reconnecting[j] = asyncio.get_running_loop().create_task(self.reconnect(j))

    async def reconnect(self, j: int) -> None:
        """
        inbox-client.js's _onClose: a synced socket that closes tries again after jitter(minDelay);
        each failed try waits _backoff(): a cap doubling from minDelay up to maxDelay, jittered in
        [cap/2, cap]. It resumes after the newest id it saw.
        """
        attempt, delay = 0, jitter(MIN_DELAY_S)
        while True:
            await asyncio.sleep(delay)
            self.attempts += 1
            try:
                sock, _, _ = await self.pool.open_one(j, after=self.newest[j], on_frame=self.on_frame)
                break
            except Exception as exc:
                key = error_kind(exc)
                self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
                delay = jitter(min(MAX_DELAY_S, MIN_DELAY_S * 2**attempt))
                attempt += 1
        self.reconnecting.pop(j, None)
        if j in self.pool.socks:  # a grow opened it meanwhile
            await sock.ws.close()
            return
        self.synced_at.setdefault(j, time.time())
        self.newest[j] = max(self.newest[j], sock.sync.get("last_id") or 0)
        self.pool.add(sock)
        self.keep(sock)

    # Commands.

    async def cmd_grow(self, target: int, after: int, concurrency: int) -> dict:
        """Open the sockets of this process' users among the first ``target`` users."""
        n = min(len(self.user_ids), max(0, math.ceil((target - self.first) / self.step)))
        before = set(self.pool.socks)
        stats = await self.pool.ensure(n, after=after, concurrency=concurrency)
        for j, sock in list(self.pool.socks.items()):
            if j not in before:
                self.newest[j] = max(self.newest[j], sock.sync.get("last_id") or 0)
                self.keep(sock)
        return {"count": stats.count, "failed": stats.failed, "errors": stats.errors, "latencies": stats.latencies,
                "online": [self.global_index(j) for j in self.pool.socks]}

    async def cmd_status(self) -> dict:
        return {"online": len(self.pool.socks), "closed": self.closed_total, "reconnecting": len(self.reconnecting),
                "synced": len(self.synced_at)}

    async def cmd_watch(self, key: str) -> None:
        self.watched[key] = ([], set())

    async def cmd_count(self, key: str) -> int:
        return len(self.watched[key][1])

    async def cmd_collect(self, key: str) -> list:
        return self.watched.pop(key)[0]

    async def cmd_mark(self) -> int:
        """Start counting closes, reconnects and their sync.done afresh; the sockets open now."""
        self.closes, self.attempts, self.connect_errors, self.synced_at = {}, 0, {}, {}
        return len(self.pool.socks)

    async def cmd_restart_report(self) -> dict:
        return {"synced_at": list(self.synced_at.values()), "closes": self.closes, "attempts": self.attempts,
                "connect_errors": self.connect_errors, "online": len(self.pool.socks), "reconnecting": len(self.reconnecting)}

    async def cmd_stop(self) -> None:
        self.stopping = True
        for task in self.reconnecting.values():
            task.cancel()
        await self.pool.close_all()

    # The command loop.

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        self.tasks: set[asyncio.Task] = set()
        loop.add_reader(self.conn.fileno(), self.on_command)
        # The loop made the pipe non-blocking: a reply larger than the pipe's buffer (the 12,500 arrival
        # records of a 50,000-socket broadcast) would be cut short, and the orchestrator wait for its rest.
        os.set_blocking(self.conn.fileno(), True)
        await self.finished

    def on_command(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            name, args = self.conn.recv()
        except (EOFError, OSError):  # the orchestrator is gone: close everything and exit
            loop.remove_reader(self.conn.fileno())
            self.orphaned = True
            name, args = "stop", ()
        task = loop.create_task(self.answer(name, args))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def answer(self, name: str, args: tuple) -> None:
        try:
            reply = ("ok", await getattr(self, f"cmd_{name}")(*args))
        except Exception:
            reply = ("error", traceback.format_exc())
        if not self.orphaned:
            try:
                self.conn.send(reply)
            except OSError:
                pass
        if name == "stop" and not self.finished.done():
            self.finished.set_result(None)


def loadgen_process(conn, first: int, step: int, user_ids, tokens, port: int, source_hosts: int, seed: int) -> None:
    """A load generator's main (multiprocessing, spawn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group; the orchestrator stops us
    raise_nofile()
    clients = Clients(conn, first, step, user_ids, tokens, port, source_hosts, seed)
    run_async(clients.serve())


class LoadGen:
    """The load-generator processes; user i's socket belongs to process i % processes."""

    def __init__(self, processes: int, user_ids: list[int], tokens: list[str], port: int, source_hosts: int, seed: int) -> None:
        ctx = mp.get_context("spawn")
        self.procs, self.conns = [], []
        for c in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=loadgen_process, name=f"scale-loadgen-{c}", daemon=True,
                               args=(child, c, processes, user_ids[c::processes], tokens[c::processes], port, source_hosts, seed))
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.is_alive()]

    def call(self, name: str, *args) -> list:
        """Send a command to every process, and return their answers."""
        for conn in self.conns:
            conn.send((name, args))
        out = []
        for proc, conn in zip(self.procs, self.conns):
            while not conn.poll(1.0):
                if not proc.is_alive():
                    raise RuntimeError(f"load generator {proc.name} exited ({proc.exitcode})")
            status, value = conn.recv()
            if status != "ok":
                raise RuntimeError(f"load generator {proc.name}: {value}")
            out.append(value)
        return out

    def total(self, name: str, *args) -> int:
        return sum(self.call(name, *args))

    def status(self, field: str) -> int:
        """A figure of cmd_status, summed over the processes."""
        return sum(s[field] for s in self.call("status"))

    def collect(self, key: str) -> list:
        return [r for part in self.call("collect", key) for r in part]

    def stop(self) -> None:
        """Close every socket and end the processes (those that do not answer are terminated, by pid)."""
        for conn in self.conns:
            try:
                conn.send(("stop", ()))
            except OSError:
                pass
        deadline = time.monotonic() + 60
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self.conns:
            conn.close()


# --- The servers ----------------------------------------------------------------------------------


@dataclass
class ServeStack(Stack):
    """
    Stack(kind="serve") that starts again on the port it had (clients reconnect to the address they
    knew), and whose stop leaves nothing behind: scripts/serve.py's children run in sessions of
    their own, so any still there once it exited are killed by pid.
    """

    port: int = 0

    def _spawn(self, kind: str, port: int | None = None) -> ServerProcess:
        self.port = port or self.port or free_port()
        return super()._spawn(kind, self.port)

    def stop(self) -> None:
        procs = []
        for pid in self.pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        for s in self.servers:
            stop_process(s.proc, timeout=STOP_GRACE_S + 10)  # SIGTERM: serve.py hands it to every child, once
        left = [p for p in procs if p.is_running()]
        for p in left:
            p.kill()
        psutil.wait_procs(left, timeout=5)
        self.servers = []


# --- Measurements (the orchestrator) --------------------------------------------------------------


def newest_id() -> int:
    from django.db import connection

    n = max_notification_id()
    connection.close()  # no idle connection of ours during the measurements
    return n


def wait_for(get, target: int, idle: float, cap: float) -> int:
    """Poll get() until it reaches target, has not moved for ``idle`` seconds, or ``cap`` seconds passed."""
    last, changed, start = get(), time.monotonic(), time.monotonic()
    while last < target:
        time.sleep(0.05)
        n, now = get(), time.monotonic()
        if n != last:
            last, changed = n, now
        elif now - changed > idle or now - start > cap:
            break
    return last


@dataclass
class Run:
    args: argparse.Namespace
    stack: ServeStack
    lg: LoadGen
    redis: PrivateRedis
    pg: PrivatePostgres | None
    dbname: str
    users: list
    sender: object
    sender_token: str
    rng: random.Random

    def meter(self) -> CpuMeter:
        return CpuMeter(
            {"servers": lambda: self.stack.pids, "loadgen_procs": lambda: self.lg.pids, "redis": lambda: self.redis.pids,
             "postgres": lambda: postgres_backend_pids(self.dbname)},
            {"postgres": self.pg.cpu_seconds} if self.pg else None,
        )

    def grow(self, target: int) -> dict:
        per_process = max(1, self.args.connect_concurrency // self.args.loadgen_processes)
        parts = self.lg.call("grow", target, newest_id(), per_process)
        errors: dict[str, int] = {}
        for part in parts:
            for k, v in part["errors"].items():
                errors[k] = errors.get(k, 0) + v
        return {"count": sum(p["count"] for p in parts), "failed": sum(p["failed"] for p in parts), "errors": errors,
                "latencies": [x for p in parts for x in p["latencies"]], "online": sorted(i for p in parts for i in p["online"])}

    def level(self, target: int, first: bool) -> tuple[dict, list[int]]:
        """Grow to ``target`` sockets, then the directed burst."""
        lg = self.lg
        if first:
            # Warm every server process before the baseline: the first sockets load the layer, the first
            # sends open the database pools and import what the REST path imports lazily (not measured).
            warm = self.grow(4 * self.args.server_processes)
            self.directed(warm["online"], sends=8 * self.args.send_concurrency)
            time.sleep(1.0)
        closed_before = lg.status("closed")
        rss_before = rss_bytes(self.stack.pids)
        meter = self.meter()
        meter.start()
        t0 = time.perf_counter()
        g = self.grow(target)
        wall = time.perf_counter() - t0
        cpu = meter.stop()
        time.sleep(1.0)  # the servers settle before their RSS is read
        rss = rss_bytes(self.stack.pids)
        online = g["online"]
        connect = summary_ms(g["latencies"])
        burst = self.directed(online)
        row = {
            "level": target, "sockets": len(online), "added": g["count"], "connect_failed": g["failed"], "connect_errors": g["errors"],
            "connects_per_s": round(g["count"] / wall, 1) if wall and g["count"] else None,
            "connect_p50_ms": connect["p50_ms"], "connect_p99_ms": connect["p99_ms"], "connect_max_ms": connect["max_ms"],
            "server_cpu_ms_per_connect": round(1000 * cpu["servers_cpu_s"] / g["count"], 2) if g["count"] else None,
            "kb_per_socket": round((rss - rss_before) / g["count"] / 1024, 1) if g["count"] else None,
            "server_rss_mb": round(rss / 2**20, 1), "loadgen_rss_mb": round(rss_bytes(lg.pids) / 2**20, 1),
            **burst,
            "closed_by_server": lg.status("closed") - closed_before,
            "cpu_connect": cpu,
        }
        return row, online

    def directed(self, online: list[int], sends: int | None = None) -> dict:
        """S single-recipient POSTs, C in flight, to random online users; latency = request start -> frame."""
        from django.db import connection

        S, C = sends or self.args.sends_per_level, self.args.send_concurrency
        key = secrets.token_hex(4)
        targets = [self.rng.choice(online) for _ in range(S)]
        ids = [self.users[i].id for i in targets]
        self.lg.call("watch", key)
        start_id = newest_id()
        meter = self.meter()

        async def send():
            conns = [HttpConn(self.stack.port) for _ in range(C)]
            await asyncio.gather(*(c.open() for c in conns))

            def make(i):
                body = orjson.dumps({"recipient": ids[i], "title": "bench scale", "category": "bench-directed",
                                     "data": {"t": time.time(), "s": i, "k": key}})
                return "POST", SEND_PATH, self.sender_token, body

            meter.start()
            t = time.time()
            try:
                return t, *(await run_requests(conns, S, make))
            finally:
                close_conns(conns)

        t_start, lat, statuses, errors, wall = run_async(send())
        ok = statuses.get(201, 0)
        wait_for(lambda: self.lg.total("count", key), ok, idle=5, cap=300)
        cpu = meter.stop()
        records = self.lg.collect(key)
        first: dict[int, tuple] = {}
        for r in sorted(records, key=lambda r: r[2]):
            first.setdefault(r[1], r)
        misrouted = sum(1 for s, r in first.items() if r[0] != targets[s] or not r[5])
        e2e = summary_ms([r[3] for r in first.values()])
        last = max((r[2] for r in first.values()), default=None)
        stored = count_stored("bench-directed", start_id)
        connection.close()
        return {
            "sends": S, "sends_per_s": round(ok / wall, 1) if wall else None, "statuses": statuses,
            "http_errors": S - ok, "error_samples": errors, "stored": stored, "delivered": len(first),
            "delivered_per_s": round(len(first) / (last - t_start), 1) if last and last > t_start else None,
            "e2e_p50_ms": e2e["p50_ms"], "e2e_p99_ms": e2e["p99_ms"], "e2e_max_ms": e2e["max_ms"],
            "lost": ok - len(first), "duplicated": len(records) - len(first), "misrouted": misrouted,
            "server_cpu_ms_per_send": round(1000 * cpu["servers_cpu_s"] / ok, 2) if ok else None, "cpu_sends": cpu,
        }

    def broadcast(self, online: list[int]) -> dict:
        """One notification to every online user, in requests of at most ``chunk`` recipients sent at once."""
        chunk = self.args.broadcast_chunk
        ids = [self.users[i].id for i in online]
        parts = [ids[i : i + chunk] for i in range(0, len(ids), chunk)]
        key = secrets.token_hex(4)
        self.lg.call("watch", key)
        time.sleep(0.5)
        meter = self.meter()

        async def send():
            conns = [HttpConn(self.stack.port) for _ in parts]
            await asyncio.gather(*(c.open() for c in conns))
            meter.start()
            t0 = time.time()

            async def one(conn, part):
                body = orjson.dumps({"recipients": part, "title": "bench scale broadcast", "category": "bench-broadcast",
                                     "data": {"t": t0, "k": key}})
                status, _ = await conn.request("POST", SEND_PATH, self.sender_token, body)
                return status, time.time() - t0

            try:
                return t0, await asyncio.gather(*(one(c, p) for c, p in zip(conns, parts)))
            finally:
                close_conns(conns)

        t0, answers = run_async(send())
        wait_for(lambda: self.lg.total("count", key), len(online), idle=10, cap=300)
        cpu = meter.stop()
        records = self.lg.collect(key)
        first: dict[int, float] = {}
        for r in records:
            first[r[0]] = min(first.get(r[0], r[2]), r[2])
        times = sorted(t - t0 for t in first.values())
        received = len(first)
        statuses: dict[int, int] = {}
        for status, _ in answers:
            statuses[status] = statuses.get(status, 0) + 1
        return {
            "sockets": len(online), "requests": len(parts), "recipients_per_request": chunk, "statuses": statuses,
            "responses_ms": [ms(t) for _, t in answers],
            "first_ms": ms(times[0]) if times else None, "p50_ms": ms(percentile(times, 50)),
            "last_ms": ms(times[-1]) if times else None,
            "time_to_all_ms": ms(times[-1]) if times and received == len(online) else None,
            "received": received, "lost": len(online) - received, "duplicated": len(records) - received,
            "misrouted": sum(1 for r in records if not r[5]),
            "server_cpu_us_per_recipient": round(1e6 * cpu["servers_cpu_s"] / received, 1) if received else None, "cpu": cpu,
        }

    def restart(self, online: list[int]) -> dict:
        """Stop every server process, store D notifications while they are down, start again, let every client come back."""
        from django.db import connection
        from inbox import notify

        lg, D = self.lg, self.args.downtime_sends
        key = secrets.token_hex(4)
        lg.call("watch", key)
        before = lg.total("mark")
        t_stop = time.time()
        self.stack.stop()
        t_down = time.time()
        print(f"   servers stopped in {t_down - t_stop:.1f} s; storing {D:,} notifications while they are down ...", flush=True)
        expected = [self.rng.choice(online) for _ in range(D)]
        for s, idx in enumerate(expected):
            notify(recipient=self.users[idx], title="bench scale downtime", category="bench-catchup",
                   data={"t": time.time(), "s": s, "k": key}, sender=self.sender)
        connection.close()
        t_stored = time.time()
        meter = self.meter()
        meter.start()
        self.stack.start()
        t_up = time.time()
        print(f"   servers accept again ({t_up - t_stored:.1f} s to start); waiting for {before:,} sockets ...", flush=True)
        deadline, shown = time.monotonic() + self.args.restart_timeout, time.monotonic()
        while time.monotonic() < deadline:
            synced = lg.status("synced")
            got = lg.total("count", key)
            if synced >= before and got >= D:
                break
            if time.monotonic() - shown > 5:
                shown = time.monotonic()
                print(f"   {time.time() - t_up:.0f} s: {synced:,} sockets back, {got:,} downtime notifications received", flush=True)
            time.sleep(0.1)
        cpu = meter.stop()
        parts = lg.call("restart_report")
        records = lg.collect(key)
        synced_at = sorted(t for p in parts for t in p["synced_at"])
        closes: dict[str, int] = {}
        errors: dict[str, int] = {}
        for p in parts:
            for k, v in p["closes"].items():
                closes[k] = closes.get(k, 0) + v
            for k, v in p["connect_errors"].items():
                errors[k] = errors.get(k, 0) + v
        first: dict[int, tuple] = {}
        for r in sorted(records, key=lambda r: r[2]):
            first.setdefault(r[1], r)
        since_up = [t - t_up for t in synced_at]
        since_start = synced_at[-1] - t_stored if synced_at else None
        arrivals = sorted(r[2] - t_up for r in first.values())
        return {
            "sockets": before, "downtime_sends": D, "stop_s": round(t_down - t_stop, 2),
            "downtime_sends_s": round(t_stored - t_down, 2), "start_s": round(t_up - t_stored, 2),
            "down_s": round(t_up - t_stop, 2), "closes_by_code": closes, "reconnected": len(synced_at),
            "reconnect_attempts": sum(p["attempts"] for p in parts), "connect_errors": errors,
            "online_at_end": sum(p["online"] for p in parts), "still_reconnecting": sum(p["reconnecting"] for p in parts),
            "synced_p50_ms": ms(percentile(since_up, 50)), "synced_last_ms": ms(since_up[-1]) if since_up else None,
            "time_to_all_synced_ms": ms(since_up[-1]) if since_up and len(synced_at) >= before else None,
            "start_to_all_synced_ms": ms(since_start) if since_up and len(synced_at) >= before else None,
            "downtime_received": len(first), "downtime_by_catchup": sum(1 for r in first.values() if r[4]),
            "downtime_last_ms": ms(arrivals[-1]) if arrivals else None,
            "time_to_all_downtime_ms": ms(arrivals[-1]) if arrivals and len(first) == D else None,
            "lost": D - len(first), "duplicated": len(records) - len(first),
            "misrouted": sum(1 for s, r in first.items() if r[0] != expected[s] or not r[5]),
            "cpu": cpu,
        }


# --- Table ----------------------------------------------------------------------------------------

LEVEL_COLUMNS = [
    ("sockets", "sockets"), ("connects_per_s", "connects/s"), ("connect_p50_ms", "connect p50 ms"),
    ("connect_p99_ms", "connect p99 ms"), ("server_cpu_ms_per_connect", "server CPU ms/connect"),
    ("kb_per_socket", "KB/socket"), ("server_rss_mb", "server RSS MB"), ("sends", "sends"),
    ("delivered_per_s", "delivered/s"), ("e2e_p50_ms", "e2e p50 ms"), ("e2e_p99_ms", "e2e p99 ms"),
    ("lost", "lost"), ("duplicated", "dup"), ("connect_failed", "connect failures"), ("closed_by_server", "closed by server"),
]
ROWS = {
    "broadcast": [
        ("sockets", "sockets online"), ("requests", "requests (recipients each)"), ("first_ms", "first socket has it ms"),
        ("p50_ms", "half the sockets have it ms"), ("time_to_all_ms", "every socket has it ms (- if any missed it)"),
        ("lost", "sockets missing it"), ("duplicated", "duplicated"),
    ],
    "restart": [
        ("sockets", "sockets online before"), ("stop_s", "servers stopped in s"), ("downtime_sends", "notifications stored while down"),
        ("start_s", "start command -> first /healthz answered s"), ("down_s", "down (stop to accepting again) s"),
        ("reconnected", "sockets back (sync.done)"), ("online_at_end", "sockets open at the end"),
        ("synced_p50_ms", "accepting -> sync.done p50 ms"),
        ("time_to_all_synced_ms", "accepting -> last sync.done ms (- if any missing)"),
        ("start_to_all_synced_ms", "start command -> last sync.done ms"),
        ("time_to_all_downtime_ms", "accepting -> every downtime notification ms"), ("lost", "downtime notifications lost"),
        ("duplicated", "duplicated"), ("reconnect_attempts", "reconnect attempts"),
    ],
}


def render_table(doc: dict) -> str:
    lines = [column_table(doc["levels"], LEVEL_COLUMNS), "", "| part | metric | value | target |", "|---|---|---|---|"]
    for part, rows in ROWS.items():
        r = doc.get(part)
        if not r:
            continue
        if part == "broadcast":  # the requests, with the recipients of each
            r = r | {"requests": f"{r['requests']} ({r['recipients_per_request']:,})"}
        lines += metric_rows(part, r, rows, TARGETS)
        if part == "restart":
            lines.append(f"| restart | closes by code | {r['closes_by_code']} | |")
    if doc.get("error"):
        lines.append(f"| ERROR | {doc['error']} | | |")
    return "\n".join(lines)


# --- Main -----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    # A SIGTERM ends the run like a Ctrl-C: the finally blocks stop every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_nofile()
    with private_database(args) as pg:
        return measure(args, pg, argv)


def measure(args, pg, argv) -> int:
    from django.core.management import call_command

    secret_key = "bench-" + secrets.token_urlsafe(40)
    ensure_database(args.database_url)
    django_setup(args, secret_key)
    call_command("migrate", verbosity=0)
    from inbox.conf import inbox_setting

    args.broadcast_chunk = args.broadcast_chunk or inbox_setting("MAX_RECIPIENTS")
    t0 = time.perf_counter()
    users, sender = ensure_users(args.sockets)
    tokens = mint_tokens(users)
    sender_token = mint_tokens([sender])[0]
    setup = {"users": len(users), "users_and_tokens_s": round(time.perf_counter() - t0, 2),
             "forget_earlier_runs_s": round(forget_earlier_runs(), 1)}
    print(f"setup: {setup}", flush=True)
    from django.db import connection

    connection.close()

    workdir = make_workdir()
    redis_srv = PrivateRedis(workdir).start()
    stack = ServeStack("serve", args.server_processes, server_env(args, secret_key, redis_srv.url), workdir)
    lg = None
    started = dt.datetime.now(dt.timezone.utc)
    info, commit = machine_info(), git_commit()
    doc = {
        "started": started.isoformat(timespec="seconds"), "command": "python bench/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "git": commit, "note": args.note, "machine": info, "mode": "quick" if args.quick else "full",
        # run.py's keys: server "serve" is scripts/serve.py running "workers" uvicorn processes on one port.
        "stack": {"server": "serve", "workers": args.server_processes, "http_workers": 0, "settings": args.settings,
                  "server_env": args.server_env, "redis": "private", "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                  "postgres": "private cluster" if pg else args.database_url.rsplit("@", 1)[-1]},
        "sizes": {k: getattr(args, k) for k in ("sockets", "levels", "server_processes", "loadgen_processes", "source_hosts",
                                                "sends_per_level", "send_concurrency", "connect_concurrency", "downtime_sends",
                                                "broadcast_chunk", "restart_timeout", "seed")},
        "setup": setup, "levels": [], "broadcast": {}, "restart": {},
    }
    status = 0
    try:
        print(f"starting scripts/serve.py with {args.server_processes} uvicorn processes, redis {redis_srv.url} ...", flush=True)
        stack.start()
        print(f"serving on port {stack.port} (pids {stack.pids}); logs in {workdir}", flush=True)
        lg = LoadGen(args.loadgen_processes, [u.id for u in users], tokens, stack.port, args.source_hosts, args.seed)
        run = Run(args, stack, lg, redis_srv, pg, args.database_url.rsplit("/", 1)[1], users, sender, sender_token,
                  random.Random(args.seed))
        online: list[int] = []
        try:
            for n, target in enumerate(args.levels):
                print(f"== {target:,} sockets", flush=True)
                row, online = run.level(target, first=n == 0)
                doc["levels"].append(row)
                print("   " + orjson.dumps({k: v for k, v in row.items() if not k.startswith("cpu")}, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
            print(f"== broadcast to {len(online):,} sockets", flush=True)
            doc["broadcast"] = run.broadcast(online)
            print("   " + orjson.dumps({k: v for k, v in doc["broadcast"].items() if k != "cpu"}, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
            print(f"== restart storm ({len(online):,} sockets)", flush=True)
            doc["restart"] = run.restart(online)
            print("   " + orjson.dumps({k: v for k, v in doc["restart"].items() if k != "cpu"}, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
        except Exception as exc:
            traceback.print_exc()
            doc["error"] = f"{type(exc).__name__}: {exc}"
            status = 1
            if not stack.alive():
                print("a server process died:\n" + stack.log_tail(), flush=True)
    finally:
        if lg is not None:
            lg.stop()
        stack.stop()
        redis_srv.stop()
    report(args, doc, started)
    return status


def report(args, doc: dict, started: dt.datetime) -> None:
    doc["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    doc["machine"] = doc["machine"] | {"loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    doc["targets"] = verdicts(doc, TARGETS)
    doc["table_markdown"] = table = render_table(doc)
    info = doc["machine"]
    print()
    print(f"Inbox scale {doc['started']} ({doc['mode']}), scripts/serve.py x {args.server_processes} uvicorn, "
          f"{args.loadgen_processes} load generators, {args.source_hosts} source addresses, git {doc['git']}, "
          f"{info['cores']} cores {info['cpu']}, load avg at start {info['loadavg_start']}")
    if args.note:
        print(f"note: {args.note}")
    print(table)
    if not args.no_save:
        if args.quick:
            names = ["scale-latest-quick.json"]  # development runs: one file, overwritten
        else:
            names = ["scale-latest.json", started.strftime("%Y-%m-%dT%H%M%SZ") + "-scale.json"]
        write_results(args.output, doc, names)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every process started here is stopped by then (the finally blocks)
        sys.exit(130)
