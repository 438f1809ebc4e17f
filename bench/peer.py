"""
The seed's Node.js peer (../shared/peer: Express + Socket.IO + JWT, one room per user) driven in the
same run as Inbox, with the same load generator and the same sizes, so that the ratios carry from
one machine to another where absolute figures do not (issues 18 and 22).

The peer runs twice: keeping notifications in memory (its upper bound), and storing each one in
PostgreSQL before the emit (the seed awaits its database write; the same PostgreSQL server as Inbox).

Why this load generator: the one that drives Inbox (loadgen.py: raw keep-alive HTTP/1.1 over asyncio
streams, ``websockets`` clients, one reader task per socket, on uvloop) also drives the peer; only the
framing differs. Socket.IO over its WebSocket transport is text frames with a short prefix
(Engine.IO ``0`` open / ``2`` ping / ``3`` pong, Socket.IO ``40`` connect / ``42`` event), so
``PeerPool`` speaks it on the same ``websockets`` connection instead of using python-socketio, whose
client (an aiohttp session per client, two protocol layers per packet) costs the generator more CPU
per frame than the Inbox client does, on the cores it shares with the servers: the peer would be
slowed by its client, not by itself. A Node.js generator for both stacks would be fair too, but the
Inbox figures compared would then not be the ones the rest of the suite measures.
"""

from __future__ import annotations

import asyncio
import filecmp
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from websockets.asyncio.client import connect as ws_connect

from loadgen import HttpConn, Pool, Sock, percentile, run_requests, summary_ms
from stack import CpuMeter, free_port, postgres_backend_pids, rss_bytes, stop_process, wait_for_port

HERE = Path(__file__).resolve().parent
PEER_DIR = HERE / ".peer"  # gitignored (bench/.gitignore): the copy we npm-install, the source is read-only
PEER_FILES = ["server.js", "package.json", "package-lock.json", "README.md"]
PEER_SCENARIOS = ["broadcast", "directed", "bulk", "idle"]  # in the suite's order
MODES = ["memory", "postgres"]
SEND_PATH = "/notifications"
# The peer's own DDL (server.js), run here first: the peer does not await it before serving.
PEER_TABLE = ("CREATE TABLE IF NOT EXISTS peer_notifications (id bigserial primary key, user_id text not null, message text, "
              "type text, is_read boolean default false, created_at timestamptz default now())")


def node_binary() -> str:
    node = os.environ.get("BENCH_NODE") or shutil.which("node") or "/usr/bin/node"
    if not Path(node).exists():
        raise RuntimeError("node is not installed (set BENCH_NODE)")
    return node


def ensure_installed(src: Path) -> dict:
    """Copy the peer next to the bench and ``npm ci`` it when its lock file changed. Returns what runs."""
    if not (src / "server.js").exists():
        raise RuntimeError(f"no peer at {src} (--peer-src)")
    PEER_DIR.mkdir(exist_ok=True)
    changed = False
    for name in PEER_FILES:
        s, d = src / name, PEER_DIR / name
        if s.exists() and not (d.exists() and filecmp.cmp(s, d, shallow=False)):
            d.unlink(missing_ok=True)
            shutil.copyfile(s, d)
            d.chmod(0o644)  # the source is read-only
            changed |= name != "README.md"
    if changed or not (PEER_DIR / "node_modules" / "socket.io").exists():
        print(f"npm ci in {PEER_DIR} ...", flush=True)
        npm = shutil.which("npm") or "npm"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
    node = node_binary()
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    sio = orjson.loads((PEER_DIR / "node_modules" / "socket.io" / "package.json").read_bytes())["version"]
    return {"source": str(src), "node": version, "socket.io": sio}


def prepare_database(url: str) -> None:
    """The peer's table, empty: each run stores into the same empty table (Inbox forgets earlier runs too)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PEER_TABLE)
        conn.execute("TRUNCATE peer_notifications")


def count_stored(url: str, type_: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM peer_notifications WHERE type = %s", [type_]).fetchone()[0]


@dataclass
class PeerServer:
    """One ``node server.js`` (the peer is one process: its rooms live in that process's memory)."""

    mode: str
    database_url: str
    workdir: Path
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "PeerServer":
        self.port = free_port()
        self.secret = "bench-" + secrets.token_urlsafe(24)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PEER_", "DJANGO_", "DATABASE_URL"))}
        # NODE_ENV=production as Inbox runs with DJANGO_DEBUG=0.
        env.update({"PORT": str(self.port), "JWT_SECRET": self.secret, "NODE_ENV": "production"})
        if self.mode == "postgres":
            env.update({"PEER_DB": "postgres", "PEER_DATABASE_URL": self.database_url})
        self.log_path = self.workdir / f"peer-{self.mode}-{self.port}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([node_binary(), "server.js"], cwd=PEER_DIR, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, timeout, self.proc, self.log_path)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]


async def login(port: int, usernames: list[str], concurrency: int = 16) -> list[str]:
    """``POST /login`` for each user (the peer signs a JWT; no password hashing): their access tokens."""
    conns = [HttpConn(port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    tokens: list[str | None] = [None] * len(usernames)
    it = iter(range(len(usernames)))

    async def worker(conn):
        for i in it:
            status, data = await conn.request("POST", "/login", "-", orjson.dumps({"username": usernames[i]}))
            if status != 200:
                raise RuntimeError(f"peer /login answered {status}: {data[:200]!r}")
            tokens[i] = orjson.loads(data)["accessToken"]

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return tokens


class PeerConnectError(Exception):
    pass


class PeerPool(Pool):
    """loadgen.Pool over Socket.IO's WebSocket transport: connected when the CONNECT ack (``40``) came."""

    def url(self, idx: int, after: int | None) -> tuple[str, int]:
        port = self.ports[idx % len(self.ports)]
        return f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket", port

    async def open_one(self, idx: int, after: int | None, on_frame=None, timeout: float = 60.0) -> tuple[Sock, list, float]:
        url, port = self.url(idx, after)
        kwargs = {"local_addr": (f"127.0.0.{1 + idx % self.source_hosts}", 0)} if self.source_hosts > 1 else {}
        t0 = time.perf_counter()
        ws = await ws_connect(url, origin=f"http://127.0.0.1:{port}", compression=None, proxy=None, ping_interval=None,
                              open_timeout=timeout, close_timeout=2, max_size=2**22, max_queue=None,
                              user_agent_header=None, **kwargs)
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout)
            if not raw.startswith("0"):
                raise PeerConnectError(f"no Engine.IO open packet: {raw[:100]!r}")
            await ws.send("40" + orjson.dumps({"token": self.tokens[idx]}).decode())
            while True:
                raw = await asyncio.wait_for(ws.recv(), timeout)
                if raw == "2":
                    await ws.send("3")
                elif raw.startswith("40"):
                    break
                elif raw.startswith("44"):
                    raise PeerConnectError(raw[2:102])
        except BaseException:
            await ws.close()
            raise
        return Sock(idx, ws, sync=orjson.loads(raw[2:] or b"{}")), [], time.perf_counter() - t0

    async def _reader(self, sock: Sock) -> None:
        ws = sock.ws
        try:
            async for raw in ws:
                if raw == "2":  # Engine.IO ping (every 25 s): unanswered, the server closes in 20 s more
                    await ws.send("3")
                    continue
                self.handler(sock.idx, raw, time.time())
        except Exception:
            pass
        if sock.idx not in self.closing:
            self.unexpected_closes += 1


@dataclass
class PeerContext:
    sizes: dict
    server: PeerServer
    usernames: list[str]
    sender_token: str
    pool: PeerPool
    database_url: str
    dbname: str
    pg_cpu: object = None  # cumulative CPU of a private cluster (as for Inbox)

    def meter(self) -> CpuMeter:
        # The same meter as Inbox's scenarios: the peer's node process is "servers"; it has no Redis.
        return CpuMeter(
            {"servers": lambda: self.server.pids, "redis": lambda: [], "postgres": lambda: postgres_backend_pids(self.dbname)},
            {"postgres": self.pg_cpu} if self.pg_cpu else None,
        )

    async def http_conns(self, n: int) -> list[HttpConn]:
        conns = [HttpConn(self.server.port) for _ in range(n)]
        await asyncio.gather(*(c.open() for c in conns))
        return conns

    def stored(self, type_: str) -> int | None:
        return count_stored(self.database_url, type_) if self.server.mode == "postgres" else None


def close_conns(conns) -> None:
    for c in conns:
        c.close()


async def wait_for_count(get, target: int, idle: float = 5.0, cap: float = 300.0) -> None:
    """Wait until get() >= target, or until it has not moved for ``idle`` seconds (as scenarios.wait_for_count)."""
    last_n, last_change, start = get(), time.monotonic(), time.monotonic()
    while get() < target:
        await asyncio.sleep(0.005)
        now, n = time.monotonic(), get()
        if n != last_n:
            last_n, last_change = n, now
        elif now - last_change > idle or now - start > cap:
            return


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


def event(raw: str) -> dict:
    """The notification of a Socket.IO event frame ``42["notification",{...}]``."""
    return orjson.loads(raw[2:])[1]


# --- Directed: the same sends as scenarios.directed, one POST per notification -----------------------


async def directed(ctx: PeerContext) -> dict:
    U, M, C = ctx.sizes["directed_users"], ctx.sizes["directed_sends"], ctx.sizes["directed_concurrency"]
    pool = ctx.pool
    await pool.shrink(U)
    cs = await pool.ensure(U, after=None)
    key = secrets.token_hex(4)
    names = ctx.usernames
    got: dict[int, float] = {}
    frame_at: dict[int, float] = {}
    answer_at: dict[int, float] = {}
    state = {"dup": 0, "misrouted": 0, "last": 0.0}

    def on_frame(idx, raw, t):
        if key not in raw:
            return
        n = event(raw)
        _, s, t0 = n["message"].split(" ")  # "<key> <seq> <intended send time>"
        seq = int(s)
        if seq in got:
            state["dup"] += 1
            return
        got[seq] = t - float(t0)
        frame_at[seq] = t
        if n["userId"] != names[idx]:
            state["misrouted"] += 1
        state["last"] = t

    pool.handler = on_frame
    conns = await ctx.http_conns(C)
    token = ctx.sender_token

    def make(i):
        body = orjson.dumps({"userId": names[i % U], "message": f"{key} {i} {time.time()!r}", "type": "bench-directed"})
        return "POST", SEND_PATH, token, body

    meter = ctx.meter()
    meter.start()
    t_start = time.time()
    lat, statuses, errors, wall = await run_requests(
        conns, M, make, answered=lambda i, status, t: answer_at.__setitem__(i, t) if status == 201 else None
    )
    ok = statuses.get(201, 0)
    await wait_for_count(lambda: len(got), ok, idle=5)
    cpu = meter.stop()
    pool.handler = lambda *a: None
    close_conns(conns)
    e2e, http = summary_ms(list(got.values())), summary_ms(lat)
    after = summary_ms([frame_at[i] - answer_at[i] for i in frame_at.keys() & answer_at.keys()])
    delivered_window = (state["last"] - t_start) if got else None
    return {
        "users_online": len(pool.socks), "sends": M, "concurrency": C, "connect_failed": cs.failed,
        "sends_per_s": round(ok / wall, 1) if wall else None,
        "delivered": len(got),
        "delivered_per_s": round(len(got) / delivered_window, 1) if delivered_window else None,
        "e2e_p50_ms": e2e["p50_ms"], "e2e_p99_ms": e2e["p99_ms"], "e2e_max_ms": e2e["max_ms"],
        "http_p50_ms": http["p50_ms"], "http_p99_ms": http["p99_ms"], "http_max_ms": http["max_ms"],
        "frame_after_201_p50_ms": after["p50_ms"], "frame_after_201_p99_ms": after["p99_ms"],
        "statuses": statuses, "http_errors": sum(v for k, v in statuses.items() if k != 201), "error_samples": errors,
        "stored": ctx.stored("bench-directed"), "lost": ok - len(got), "duplicated": state["dup"],
        "misrouted": state["misrouted"], "unexpected_closes": pool.unexpected_closes,
        "server_cpu_ms_per_send": round(1000 * cpu["servers_cpu_s"] / ok, 3) if ok else None,
        "cpu": cpu,
    }


# --- Fan-out: the peer takes one userId per POST, so N recipients are N POSTs --------------------------


async def _fanout(ctx: PeerContext, recipients: list[int], key: str, type_: str, tag: int, C: int) -> dict:
    """One notification to ``recipients`` (user indices) the peer's way: one POST each, C in flight."""
    names, token = ctx.usernames, ctx.sender_token
    conns = await ctx.http_conns(min(C, len(recipients)))
    t0 = time.time()

    def make(i):
        return "POST", SEND_PATH, token, orjson.dumps({"userId": names[recipients[i]], "message": f"{key} {tag} {t0!r}", "type": type_})

    _, statuses, errors, wall = await run_requests(conns, len(recipients), make)
    close_conns(conns)
    return {"t0": t0, "wall": wall, "statuses": statuses, "errors": errors}


def _fanout_handler(key: str, seen: dict, count: dict, last: dict, state: dict):
    def on_frame(idx, raw, t):
        if key not in raw:
            return
        tag = int(event(raw)["message"].split(" ")[1])
        if (tag, idx) in seen:
            state["dup"] += 1
            return
        seen[(tag, idx)] = t
        count[tag] = count.get(tag, 0) + 1
        last[tag] = max(last.get(tag, 0.0), t)

    return on_frame


async def bulk(ctx: PeerContext) -> dict:
    """As scenarios.bulk (N online recipients, R times back to back), each time N POSTs with C in flight."""
    N, R, C = ctx.sizes["bulk_recipients"], ctx.sizes["bulk_requests"], ctx.sizes["directed_concurrency"]
    pool = ctx.pool
    await pool.shrink(N)
    cs = await pool.ensure(N, after=None)
    key = secrets.token_hex(4)
    seen, count, last, state = {}, {}, {}, {"dup": 0}
    pool.handler = _fanout_handler(key, seen, count, last, state)
    rounds = []
    meter = ctx.meter()
    meter.start()
    t_begin = time.time()
    for b in range(R):
        rounds.append(await _fanout(ctx, list(range(N)), key, "bench-bulk", b, C))
    ok = sum(r["statuses"].get(201, 0) for r in rounds)
    await wait_for_count(lambda: len(seen), ok, idle=5)
    cpu = meter.stop()
    pool.handler = lambda *a: None
    stored = ctx.stored("bench-bulk")
    responses = [r["wall"] for r in rounds]
    to_last = [last[b] - rounds[b]["t0"] for b in range(R) if count.get(b)]
    delivered = len(seen)
    statuses = {}
    for r in rounds:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {
        "recipients": N, "requests": R, "posts_per_request": N, "concurrency": C, "connect_failed": cs.failed,
        "statuses": statuses, "stored": stored,
        "stored_recipients_per_s": round((stored if stored is not None else ok) / sum(responses), 1) if responses else None,
        "delivered": delivered,
        "delivered_recipients_per_s": round(delivered / (max(last.values()) - t_begin), 1) if delivered else None,
        "response_p50_ms": ms(percentile(responses, 50)), "response_max_ms": ms(max(responses)),
        "last_frame_p50_ms": ms(percentile(to_last, 50)), "last_frame_max_ms": ms(max(to_last) if to_last else None),
        "lost": ok - delivered, "duplicated": state["dup"], "unexpected_closes": pool.unexpected_closes,
        "error_samples": [e for r in rounds for e in r["errors"]][:5],
        "server_cpu_us_per_recipient": round(1e6 * cpu["servers_cpu_s"] / ok, 1) if ok else None, "cpu": cpu,
    }


async def broadcast(ctx: PeerContext) -> dict:
    """As scenarios.broadcast (N online, R times): each time N POSTs with C in flight, time until every socket has it."""
    N, R, C = ctx.sizes["broadcast_users"], ctx.sizes["broadcast_requests"], ctx.sizes["directed_concurrency"]
    pool = ctx.pool
    await pool.shrink(N)
    cs = await pool.ensure(N, after=None, concurrency=64)
    reps, ok_total = [], 0
    meter = ctx.meter()
    meter.start()
    for rep in range(R):
        key = secrets.token_hex(4)
        seen, count, last, state = {}, {}, {}, {"dup": 0}
        pool.handler = _fanout_handler(key, seen, count, last, state)
        await asyncio.sleep(0.5)
        r = await _fanout(ctx, list(range(N)), key, "bench-broadcast", 0, C)
        ok = r["statuses"].get(201, 0)
        ok_total += ok
        await wait_for_count(lambda: len(seen), N, idle=10)
        times = sorted(t - r["t0"] for t in seen.values())
        reps.append({
            "statuses": r["statuses"], "response_ms": ms(r["wall"]), "received": len(seen), "duplicated": state["dup"],
            "first_ms": ms(times[0]) if times else None, "median_ms": ms(percentile(times, 50)),
            "last_ms": ms(times[-1]) if times else None,
        })
        print(f"   peer broadcast {rep + 1}/{R}: {reps[-1]}", flush=True)
    cpu = meter.stop()
    pool.handler = lambda *a: None
    return {
        "users_online": len(pool.socks), "connect_failed": cs.failed, "posts_per_request": N, "concurrency": C, "requests": reps,
        "response_ms_max": max(r["response_ms"] for r in reps),
        "first_frame_ms_min": min((r["first_ms"] for r in reps if r["first_ms"] is not None), default=None),
        "median_frame_ms": percentile([r["median_ms"] for r in reps if r["median_ms"] is not None], 50),
        "time_to_all_ms_max": max(r["last_ms"] for r in reps) if all(r["received"] == N for r in reps) else None,
        "last_frame_ms_max": max((r["last_ms"] or 0) for r in reps),
        "lost": sum(N - r["received"] for r in reps), "duplicated": sum(r["duplicated"] for r in reps),
        "unexpected_closes": pool.unexpected_closes,
        "server_cpu_us_per_recipient": round(1e6 * cpu["servers_cpu_s"] / ok_total, 1) if ok_total else None, "cpu": cpu,
    }


# --- Idle: as scenarios.idle, N authenticated sockets opened idle_concurrency at a time ---------------


async def idle(ctx: PeerContext) -> dict:
    """N idle authenticated sockets (each waits for Socket.IO's CONNECT ack): memory per socket, connect rate."""
    N = ctx.sizes["idle_sockets"]
    pool = ctx.pool
    await pool.shrink(0)
    await pool.ensure(4, after=None)  # warm up, as Inbox's idle does, before the baseline
    await asyncio.sleep(1.0)
    base_n, base_rss = len(pool.socks), rss_bytes(ctx.server.pids)
    meter = ctx.meter()
    meter.start()
    cs = await pool.ensure(N, after=None, concurrency=ctx.sizes["idle_concurrency"])
    cpu = meter.stop()
    closes_before = pool.unexpected_closes
    await asyncio.sleep(ctx.sizes["idle_hold_s"])
    n, rss = len(pool.socks), rss_bytes(ctx.server.pids)
    added = n - base_n
    connect = summary_ms(cs.latencies)
    return {
        "sockets": n, "connect_failed": cs.failed, "failed": cs.failed,
        "kb_per_socket": round((rss - base_rss) / added / 1024, 1) if added else None,
        "server_rss_mb": round(rss / 2**20, 1), "server_rss_baseline_mb": round(base_rss / 2**20, 1),
        "connects_per_s": round(cs.count / cs.seconds, 1) if cs.seconds else None,
        "connect_p50_ms": connect["p50_ms"], "connect_p99_ms": connect["p99_ms"], "connect_max_ms": connect["max_ms"],
        "server_cpu_ms_per_connect": round(1000 * cpu["servers_cpu_s"] / cs.count, 2) if cs.count else None,
        "held_s": ctx.sizes["idle_hold_s"], "closed_by_server_while_idle": pool.unexpected_closes - closes_before,
        "unexpected_closes": pool.unexpected_closes, "cpu": cpu,
    }


FUNCS = {"directed": directed, "bulk": bulk, "broadcast": broadcast, "idle": idle}


async def run_mode(mode: str, sizes: dict, names: list[str], database_url: str, workdir: Path, pg_cpu) -> dict:
    """Start the peer in ``mode``, run the scenarios against it, stop it."""
    import math

    if mode == "postgres":
        prepare_database(database_url)
    server = PeerServer(mode, database_url, workdir).start()
    print(f"peer ({mode}) on port {server.port} (pid {server.proc.pid}); log {server.log_path}", flush=True)
    results = {}
    try:
        n_users = max([sizes["directed_users"] if "directed" in names else 0, sizes["bulk_recipients"] if "bulk" in names else 0,
                       sizes["broadcast_users"] if "broadcast" in names else 0, sizes["idle_sockets"] if "idle" in names else 0, 1])
        usernames = [f"bench-u{i:06d}" for i in range(n_users)]  # the same names as Inbox's users: same payload sizes
        tokens = await login(server.port, usernames)
        (sender_token,) = await login(server.port, ["bench-sender"], concurrency=1)
        pool = PeerPool([server.port], usernames, tokens, source_hosts=math.ceil(n_users / 25000))
        ctx = PeerContext(sizes=sizes, server=server, usernames=usernames, sender_token=sender_token, pool=pool,
                          database_url=database_url, dbname=database_url.rsplit("/", 1)[1], pg_cpu=pg_cpu)
        try:
            for name in names:
                print(f"== peer ({mode}) {name}", flush=True)
                t0 = time.perf_counter()
                try:
                    r = await FUNCS[name](ctx)
                except Exception as exc:
                    import traceback

                    traceback.print_exc()
                    r = {"error": f"{type(exc).__name__}: {exc}"}
                r["scenario_s"] = round(time.perf_counter() - t0, 1)
                results[name] = r
                print("   " + orjson.dumps({k: v for k, v in r.items() if k not in ("cpu", "requests")},
                                           option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
                print("   cpu " + orjson.dumps(r.get("cpu")).decode(), flush=True)
                if not server.alive():
                    print("the peer died:\n" + server.log_tail(), flush=True)
                    break
        finally:
            await pool.close_all()
    finally:
        server.stop()
    return results


def run_peer(args, sizes: dict, scenarios: list[str], database_url: str, workdir: Path, pg_cpu) -> dict:
    """Both modes of the peer on the peer scenarios among ``scenarios``; returns {"info", "modes": {mode: results}}."""
    names = [s for s in PEER_SCENARIOS if s in scenarios] or ["directed"]
    info = ensure_installed(Path(args.peer_src))
    info["database"] = database_url.rsplit("@", 1)[-1]
    print(f"peer: {info}; scenarios {names}", flush=True)
    modes = {}
    for mode in MODES:
        try:
            import uvloop  # the same loop as Inbox's load generator

            modes[mode] = uvloop.run(run_mode(mode, sizes, names, database_url, workdir, pg_cpu))
        except ImportError:
            modes[mode] = asyncio.run(run_mode(mode, sizes, names, database_url, workdir, pg_cpu))
    return {"info": info, "modes": modes}


# --- Side by side ---------------------------------------------------------------------------------


def derived(name: str, r: dict) -> dict:
    """CPU per delivered frame, computed the same way for both stacks from their raw results."""
    if not r or r.get("error") or not r.get("cpu"):
        return {}
    delivered = r.get("delivered")
    if delivered is None:  # Inbox's broadcast counts per request
        delivered = sum(x.get("received", 0) for x in r.get("requests", []))
    if not delivered:
        return {}
    cpu = r["cpu"]
    scale, unit = (1e3, "ms") if name == "directed" else (1e6, "us")
    per = lambda groups: round(scale * sum(cpu.get(f"{g}_cpu_s", 0.0) for g in groups) / delivered, 3)  # noqa: E731
    return {f"server_cpu_{unit}_per_delivery": per(("servers",)),
            f"stack_cpu_{unit}_per_delivery": per(("servers", "redis", "postgres"))}


# (key, label, better): the ratio is Inbox ÷ peer; "higher"/"lower" says which side of 1 favours Inbox.
COMPARED = {
    "directed": [
        ("delivered_per_s", "delivered/s", "higher"), ("sends_per_s", "sends/s (201 answered)", "higher"),
        ("e2e_p50_ms", "end-to-end p50 ms", "lower"), ("e2e_p99_ms", "end-to-end p99 ms", "lower"),
        ("e2e_max_ms", "end-to-end max ms", "lower"), ("http_p99_ms", "POST round trip p99 ms", "lower"),
        ("server_cpu_ms_per_delivery", "server CPU ms per delivery", "lower"),
        ("stack_cpu_ms_per_delivery", "server + Redis + PostgreSQL CPU ms per delivery", "lower"),
        ("lost", "lost", None), ("duplicated", "duplicated", None), ("misrouted", "frames to the wrong user", None),
        ("http_errors", "HTTP errors", None), ("stored", "stored", None),
    ],
    "bulk": [
        ("delivered_recipients_per_s", "recipients/s delivered", "higher"),
        ("stored_recipients_per_s", "recipients/s stored (201)", "higher"),
        ("last_frame_p50_ms", "time to last frame p50 ms", "lower"), ("last_frame_max_ms", "time to last frame max ms", "lower"),
        ("server_cpu_us_per_delivery", "server CPU us per delivery", "lower"),
        ("stack_cpu_us_per_delivery", "server + Redis + PostgreSQL CPU us per delivery", "lower"),
        ("lost", "lost", None), ("duplicated", "duplicated", None),
    ],
    "broadcast": [
        ("time_to_all_ms_max", "every socket has it ms (worst)", "lower"), ("median_frame_ms", "half the sockets have it ms", "lower"),
        ("first_frame_ms_min", "first socket has it ms", "lower"), ("response_ms_max", "POST(s) answered ms (worst)", "lower"),
        ("server_cpu_us_per_delivery", "server CPU us per delivery", "lower"),
        ("stack_cpu_us_per_delivery", "server + Redis + PostgreSQL CPU us per delivery", "lower"),
        ("lost", "sockets missing it", None),
    ],
    "idle": [
        ("kb_per_socket", "server memory KB per socket", "lower"), ("connects_per_s", "connects/s", "higher"),
        ("connect_p99_ms", "connect p99 ms", "lower"), ("server_cpu_ms_per_connect", "server CPU ms per connect", "lower"),
        ("sockets", "sockets open", None), ("connect_failed", "connects failed", None),
        ("closed_by_server_while_idle", "closed by the server while idle", None),
    ],
}


def ratio(a, b) -> float | None:
    if a is None or b is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b == 0:
        return None
    return round(a / b, 2)


def compare(inbox: dict, peer: dict) -> dict:
    """{scenario: {metric: {"inbox", "peer_memory", "peer_postgres", "ratio_postgres", "ratio_memory", "better"}}}."""
    out = {}
    for name, rows in COMPARED.items():
        sides = {"inbox": inbox.get(name)} | {f"peer_{m}": peer["modes"].get(m, {}).get(name) for m in MODES}
        if not any(sides.values()):
            continue
        vals = {side: ({**r, **derived(name, r)} if r else {}) for side, r in sides.items()}
        table = {}
        for key, _, better in rows:
            row = {side: v.get(key) for side, v in vals.items()}
            if better:
                row["ratio_postgres"] = ratio(row["inbox"], row["peer_postgres"])
                row["ratio_memory"] = ratio(row["inbox"], row["peer_memory"])
                row["better"] = better
            table[key] = row
        # What shared the cores during each window (other helpers' work shows as "other").
        table["_cpu"] = {side: "{loadgen_cpu_pct} / {servers_cpu_pct} / {redis_cpu_pct} / {postgres_cpu_pct} / {other_cpu_pct} ({wall_s})".format(**r["cpu"])
                         for side, r in sides.items() if r and r.get("cpu")}
        table["_other_cpu_pct"] = {side: r["cpu"].get("other_cpu_pct") for side, r in sides.items() if r and r.get("cpu")}
        out[name] = table
    return out


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def render_table(comparison: dict) -> str:
    lines = ["| scenario | metric | Inbox | peer (PostgreSQL) | peer (memory) | Inbox ÷ peer (PostgreSQL) | Inbox ÷ peer (memory) |",
             "|---|---|---|---|---|---|---|"]
    for name, rows in COMPARED.items():
        table = comparison.get(name)
        if not table:
            continue
        for key, label, better in rows:
            row = table[key]
            hint = f" ({better} is better)" if better else ""
            lines.append(f"| {name} | {label}{hint} | {fmt(row['inbox'])} | {fmt(row['peer_postgres'])} | {fmt(row['peer_memory'])} | "
                         f"{fmt(row.get('ratio_postgres')) if better else ''} | {fmt(row.get('ratio_memory')) if better else ''} |")
        cpu = table.get("_cpu") or {}
        lines.append(f"| {name} | CPU % of one core: loadgen / servers / redis / postgres / other processes (window s) | "
                     f"{cpu.get('inbox', '-')} | {cpu.get('peer_postgres', '-')} | {cpu.get('peer_memory', '-')} | | |")
    return "\n".join(lines)


def headline(comparison: dict) -> dict:
    """The three ratios the issues ask for (directed, against the storing peer)."""
    d = comparison.get("directed") or {}
    pick = lambda key: (d.get(key) or {}).get("ratio_postgres")  # noqa: E731
    other = [v for t in comparison.values() for v in (t.get("_other_cpu_pct") or {}).values() if v is not None]
    return {"delivered_per_s": pick("delivered_per_s"), "e2e_p99_ms": pick("e2e_p99_ms"),
            "server_cpu_ms_per_delivery": pick("server_cpu_ms_per_delivery"),
            "other_cpu_pct_max": max(other, default=None)}


BUSY_OTHER_PCT = 25  # of one core: past this, what others ran moved the figures more than most A/B gains


def headline_text(h: dict) -> str:
    text = (f"directed, Inbox / storing peer: delivered/s x{fmt(h['delivered_per_s'])} (higher is better), "
            f"p99 x{fmt(h['e2e_p99_ms'])} and server CPU per delivery x{fmt(h['server_cpu_ms_per_delivery'])} (lower is better)")
    if (h.get("other_cpu_pct_max") or 0) > BUSY_OTHER_PCT:
        text += (f"\nWARNING: other processes used up to {h['other_cpu_pct_max']} % of one core during a compared window: "
                 "the machine was shared and the ratios carry that; rerun on a quiet machine")
    return text

