"""
The six scenarios of issue 5. Each returns a flat dict of figures (plus ``cpu``: the CPU used by
the load generator, the servers, Redis and the PostgreSQL backends during its measured window).

Every notification a scenario sends carries ``data = {"t": <intended send time>, "k": <run key>,
...}``: the receiver computes end-to-end latency from ``t`` and ignores frames of other runs.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from loadgen import HttpConn, Pool, percentile, run_requests, summary_ms
from stack import CpuMeter, postgres_backend_pids, rss_bytes

SEND_PATH = "/api/notifications/"


@dataclass
class Context:
    args: object
    sizes: dict
    stack: object
    redis_url: str
    redis_pids: Callable[[], list[int]]
    dbname: str
    user_ids: list[int]
    tokens: list[str]
    sender_token: str
    max_id: Callable[[], int]
    count_stored: Callable[[str, int], int]
    pg_cpu: Callable[[], float] | None = None  # cumulative CPU of a private cluster
    pg_backends: Callable[[], int] | None = None
    pool: Pool | None = None
    profiles: list[str] = field(default_factory=list)
    current: str = ""

    def meter(self) -> CpuMeter:
        """A CPU meter for the measured window; with --profile SCENARIO, py-spy records the same window."""
        ctx = self
        profiling = self.args.profile == self.current

        class Meter(CpuMeter):
            def start(self):
                if profiling and not getattr(self, "_profilers", None):
                    self._profilers = start_profilers(ctx, ctx.current)
                super().start()

            def stop(self):
                result = super().stop()
                if getattr(self, "_profilers", None):
                    ctx.profiles += stop_profilers(self._profilers)
                    self._profilers = None
                return result

        return Meter(
            {
                "servers": lambda: self.stack.pids,
                "redis": self.redis_pids,
                "postgres": lambda: postgres_backend_pids(self.dbname),
            },
            {"postgres": self.pg_cpu} if self.pg_cpu else None,
        )

    async def http_conns(self, n: int) -> list[HttpConn]:
        ports = self.stack.http_ports
        conns = [HttpConn(ports[i % len(ports)]) for i in range(n)]
        await asyncio.gather(*(c.open() for c in conns))
        return conns


def close_conns(conns) -> None:
    for c in conns:
        c.close()


async def wait_for_count(get: Callable[[], int], target: int, idle: float = 5.0, cap: float = 300.0) -> None:
    """Wait until get() >= target, or until it has not moved for ``idle`` seconds."""
    last_n, last_change, start = get(), time.monotonic(), time.monotonic()
    while get() < target:
        await asyncio.sleep(0.005)
        now = time.monotonic()
        n = get()
        if n != last_n:
            last_n, last_change = n, now
        elif now - last_change > idle or now - start > cap:
            return


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def first_arrivals(key: str):
    """
    A Pool handler keeping, for each socket, when the frame of this run (``key``) first reached it.
    Returns (the handler, {socket index: arrival time}, {"dup": frames that came again}).
    bench/curves.py's bulk sends count with the same.
    """
    recv: dict[int, float] = {}
    state = {"dup": 0}

    def on_frame(idx, raw, t):
        if key not in raw:
            return
        if idx in recv:
            state["dup"] += 1
        else:
            recv[idx] = t

    return on_frame, recv, state


# --- 1. Directed sends ---------------------------------------------------------------------------


async def directed(ctx: Context) -> dict:
    """U users online, M single-recipient POSTs with C in flight; latency = request start -> frame."""
    U, M, C = ctx.sizes["directed_users"], ctx.sizes["directed_sends"], ctx.sizes["directed_concurrency"]
    pool = ctx.pool
    await pool.shrink(U)
    cs = await pool.ensure(U, after=ctx.max_id())
    key = secrets.token_hex(4)
    start_id = ctx.max_id()
    user_ids = ctx.user_ids
    got: dict[int, float] = {}
    frame_at: dict[int, float] = {}  # send -> when its frame was read
    answer_at: dict[int, float] = {}  # send -> when its 201 was read
    state = {"dup": 0, "misrouted": 0, "last": 0.0}

    def on_frame(idx, raw, t):
        if key not in raw:
            return
        n = orjson.loads(raw)["notification"]
        d = n["data"]
        seq = d["s"]
        if seq in got:
            state["dup"] += 1
            return
        got[seq] = t - d["t"]
        frame_at[seq] = t
        if n["recipient"] != user_ids[idx]:
            state["misrouted"] += 1
        state["last"] = t

    pool.handler = on_frame
    conns = await ctx.http_conns(C)
    token = ctx.sender_token

    def make(i):
        body = orjson.dumps(
            {"recipient": user_ids[i % U], "title": "bench directed", "category": "bench-directed",
             "data": {"t": time.time(), "s": i, "k": key}}
        )
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
    stored = ctx.count_stored("bench-directed", start_id)
    e2e = summary_ms(list(got.values()))
    http = summary_ms(lat)
    # The delivery's own share: from the 201 to the frame, on the load generator's clock (the frame
    # may come first: the fan-out starts at the commit, before the response is written).
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
        "stored": stored, "lost": ok - len(got), "duplicated": state["dup"], "misrouted": state["misrouted"],
        "unexpected_closes": pool.unexpected_closes,
        "server_cpu_ms_per_send": round(1000 * cpu["servers_cpu_s"] / ok, 2) if ok else None,
        "cpu": cpu,
    }


# --- 2. Bulk sends -------------------------------------------------------------------------------


async def bulk(ctx: Context) -> dict:
    """One request to N online recipients, repeated R times back to back (next starts at the previous 201)."""
    N, R = ctx.sizes["bulk_recipients"], ctx.sizes["bulk_requests"]
    pool = ctx.pool
    await pool.shrink(N)
    cs = await pool.ensure(N, after=ctx.max_id())
    key = secrets.token_hex(4)
    start_id = ctx.max_id()
    recipients = ctx.user_ids[:N]
    seen: set[tuple[int, int]] = set()
    count = [0] * R
    last = [0.0] * R
    state = {"dup": 0}

    def on_frame(idx, raw, t):
        if key not in raw:
            return
        b = orjson.loads(raw)["notification"]["data"]["b"]
        if (b, idx) in seen:
            state["dup"] += 1
            return
        seen.add((b, idx))
        count[b] += 1
        last[b] = t

    pool.handler = on_frame
    (conn,) = await ctx.http_conns(1)
    starts, responses, statuses = [0.0] * R, [], {}
    meter = ctx.meter()
    meter.start()
    t_begin = time.time()
    for b in range(R):
        t0 = time.time()
        body = orjson.dumps({"recipients": recipients, "title": "bench bulk", "category": "bench-bulk",
                             "data": {"t": t0, "b": b, "k": key}})
        status, _ = await conn.request("POST", SEND_PATH, ctx.sender_token, body)
        responses.append(time.time() - t0)
        starts[b] = t0
        statuses[status] = statuses.get(status, 0) + 1
    ok = statuses.get(201, 0)
    await wait_for_count(lambda: len(seen), ok * N, idle=5)
    cpu = meter.stop()
    pool.handler = lambda *a: None
    conn.close()
    stored = ctx.count_stored("bench-bulk", start_id)
    to_last = [last[b] - starts[b] for b in range(R) if count[b]]
    delivered = len(seen)
    return {
        "recipients": N, "requests": R, "connect_failed": cs.failed, "statuses": statuses, "stored": stored,
        "stored_recipients_per_s": round(stored / sum(responses), 1) if responses else None,
        "delivered": delivered,
        "delivered_recipients_per_s": round(delivered / (max(last) - t_begin), 1) if delivered else None,
        "response_p50_ms": ms(percentile(responses, 50)), "response_max_ms": ms(max(responses)),
        "responses_ms": [ms(r) for r in responses],  # in order: which request was the slow one
        "last_frame_p50_ms": ms(percentile(to_last, 50)), "last_frame_max_ms": ms(max(to_last) if to_last else None),
        "lost": ok * N - delivered, "duplicated": state["dup"], "unexpected_closes": pool.unexpected_closes,
        "server_cpu_us_per_recipient": round(1e6 * cpu["servers_cpu_s"] / (ok * N), 1) if ok else None, "cpu": cpu,
    }


# --- 3. Broadcast --------------------------------------------------------------------------------


async def broadcast(ctx: Context) -> dict:
    """N users online, one request to all of them: time until every socket has it."""
    N, R = ctx.sizes["broadcast_users"], ctx.sizes["broadcast_requests"]
    pool = ctx.pool
    await pool.shrink(N)
    cs = await pool.ensure(N, after=ctx.max_id(), concurrency=64)
    recipients = ctx.user_ids[:N]
    (conn,) = await ctx.http_conns(1)
    reps = []
    meter = ctx.meter()
    meter.start()
    for rep in range(R):
        key = secrets.token_hex(4)
        pool.handler, recv, state = first_arrivals(key)
        await asyncio.sleep(0.5)
        t0 = time.time()
        body = orjson.dumps({"recipients": recipients, "title": "bench broadcast", "category": "bench-broadcast",
                             "data": {"t": t0, "k": key}})
        status, _ = await conn.request("POST", SEND_PATH, ctx.sender_token, body)
        response = time.time() - t0
        await wait_for_count(lambda: len(recv), N, idle=10)
        times = sorted(v - t0 for v in recv.values())
        reps.append({
            "status": status, "response_ms": ms(response), "received": len(recv), "duplicated": state["dup"],
            "first_ms": ms(times[0]) if times else None, "median_ms": ms(percentile(times, 50)),
            "last_ms": ms(times[-1]) if times else None,
        })
        print(f"   broadcast {rep + 1}/{R}: {reps[-1]}", flush=True)
    cpu = meter.stop()
    pool.handler = lambda *a: None
    conn.close()
    return {
        "users_online": len(pool.socks), "connect_failed": cs.failed, "requests": reps,
        "response_ms_max": max(r["response_ms"] for r in reps),
        "first_frame_ms_min": min((r["first_ms"] for r in reps if r["first_ms"] is not None), default=None),
        "median_frame_ms": percentile([r["median_ms"] for r in reps if r["median_ms"] is not None], 50),
        # Only meaningful when every socket got it; otherwise None, and see last_frame_ms_max / lost.
        "time_to_all_ms_max": max(r["last_ms"] for r in reps) if all(r["received"] == N for r in reps) else None,
        "last_frame_ms_max": max((r["last_ms"] or 0) for r in reps),
        "lost": sum(N - r["received"] for r in reps), "duplicated": sum(r["duplicated"] for r in reps),
        "unexpected_closes": pool.unexpected_closes, "cpu": cpu,
    }


# --- 4. Idle sockets -----------------------------------------------------------------------------


async def idle(ctx: Context) -> dict:
    """N idle authenticated sockets (each waits for sync.done): memory per socket, connect rate."""
    import redis

    N = ctx.sizes["idle_sockets"]
    pool = ctx.pool
    after = ctx.max_id()
    # Warm up every server (first socket loads the layer, the pools...) before the baseline.
    warm = 4 * len(ctx.stack.ports)
    await pool.ensure(warm, after=after)
    await asyncio.sleep(1.0)
    base_n = len(pool.socks)
    base_rss = rss_bytes(ctx.stack.pids)
    r = redis.Redis.from_url(ctx.redis_url)
    base_redis = r.info("memory")["used_memory"]
    meter = ctx.meter()
    meter.start()
    cs = await pool.ensure(N, after=after, concurrency=ctx.sizes["idle_concurrency"])
    cpu = meter.stop()
    closes_before = pool.unexpected_closes
    # Hold them idle: the servers must not close idle sockets (RSS is read at the end).
    await asyncio.sleep(ctx.sizes["idle_hold_s"])
    n = len(pool.socks)
    rss = rss_bytes(ctx.stack.pids)
    redis_mem = r.info("memory")["used_memory"]
    r.close()
    added = n - base_n
    connect = summary_ms(cs.latencies)
    return {
        "sockets": n, "connect_failed": cs.failed, "failed": cs.failed, "connect_errors": cs.errors,
        "kb_per_socket": round((rss - base_rss) / added / 1024, 1) if added else None,
        "kb_per_socket_total": round(rss / n / 1024, 1) if n else None,
        "server_rss_mb": round(rss / 2**20, 1), "server_rss_baseline_mb": round(base_rss / 2**20, 1),
        "redis_bytes_per_socket": round((redis_mem - base_redis) / added) if added else None,
        "connects_per_s": round(cs.count / cs.seconds, 1) if cs.seconds else None,
        "connect_p50_ms": connect["p50_ms"], "connect_p99_ms": connect["p99_ms"], "connect_max_ms": connect["max_ms"],
        "server_cpu_ms_per_connect": round(1000 * cpu["servers_cpu_s"] / cs.count, 2) if cs.count else None,
        "held_s": ctx.sizes["idle_hold_s"], "closed_by_server_while_idle": pool.unexpected_closes - closes_before,
        "unexpected_closes": pool.unexpected_closes, "cpu": cpu,
    }


# --- 5. Catch-up ---------------------------------------------------------------------------------


async def catchup(ctx: Context) -> dict:
    """A user is away while M notifications arrive, then reconnects with after=: time to sync.done."""
    M, R = ctx.sizes["catchup_missed"], ctx.sizes["catchup_reps"]
    pool = ctx.pool
    first = ctx.sizes["directed_users"]
    conns = await ctx.http_conns(ctx.sizes["directed_concurrency"])
    times, frames_counts, missing, more = [], [], 0, 0
    meter = ctx.meter()
    cpu_total = None
    for rep in range(R):
        idx = first + rep
        uid = ctx.user_ids[idx]
        sock, _, _ = await pool.open_one(idx, after=ctx.max_id())
        last_id = sock.sync["last_id"]
        await sock.ws.close()
        key = secrets.token_hex(4)

        def make(i, uid=uid, key=key):
            body = orjson.dumps({"recipient": uid, "title": "bench catch-up", "category": "bench-catchup",
                                 "data": {"t": time.time(), "s": i, "k": key}})
            return "POST", SEND_PATH, ctx.sender_token, body

        _, statuses, errors, _ = await run_requests(conns, M, make)
        meter.start()
        sock, frames, elapsed = await pool.open_one(idx, after=last_id)
        cpu = meter.stop()
        await sock.ws.close()
        ours = [f for f in frames if f.get("type") == "notification.created" and f["notification"]["data"].get("k") == key]
        times.append(elapsed)
        frames_counts.append(len(ours))
        missing += statuses.get(201, 0) - len(set(f["notification"]["id"] for f in ours))
        more += bool(sock.sync.get("more"))
        cpu_total = cpu
        print(f"   catch-up {rep + 1}/{R}: {len(ours)} frames, sync.done after {elapsed * 1000:.1f} ms", flush=True)
    close_conns(conns)
    s = summary_ms(times)
    return {
        "missed": M, "reconnects": R, "frames_per_sync": min(frames_counts) if frames_counts else None,
        "time_to_sync_done_ms_p50": s["p50_ms"], "time_to_sync_done_ms_max": s["max_ms"],
        "times_ms": [round(t * 1000, 1) for t in times], "missing": missing, "more_flag": more, "cpu": cpu_total,
    }


# --- 6. Large inboxes ----------------------------------------------------------------------------


async def large(ctx: Context) -> dict:
    """List, unread count and a 50-row catch-up for random users of a table of ~1M notifications."""
    from django.db import connection

    n_users, n_req, n_catch, C = (ctx.sizes[k] for k in ("large_users", "large_requests", "large_catchups", "large_concurrency"))
    rng = random.Random(5)
    idxs = [rng.randrange(n_users) for _ in range(n_req)]
    conns = await ctx.http_conns(C)
    tokens = ctx.tokens
    errors = {}

    def list_req(i):
        return "GET", "/api/notifications/", tokens[idxs[i]], None

    def unread_req(i):
        return "GET", "/api/notifications/unread-count/", tokens[idxs[i]], None

    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM inbox_notification")
        total_rows = c.fetchone()[0]
    meter = ctx.meter()
    meter.start()
    list_lat, st1, err1, _ = await run_requests(conns, n_req, list_req)
    unread_lat, st2, err2, _ = await run_requests(conns, n_req, unread_req)
    cpu = meter.stop()
    close_conns(conns)
    for st in (st1, st2):
        for k, v in st.items():
            if k != 200:
                errors[k] = errors.get(k, 0) + v

    # Catch-up of the 50 newest rows of random users (the after= ids are looked up beforehand).
    catch_idxs = [rng.randrange(n_users) for _ in range(n_catch)]
    afters = []
    with connection.cursor() as c:
        for idx in catch_idxs:
            c.execute("SELECT id FROM inbox_notification WHERE recipient_id = %s ORDER BY id DESC OFFSET 50 LIMIT 1",
                      [ctx.user_ids[idx]])
            row = c.fetchone()
            afters.append(row[0] if row else 0)
    catch_times, short = [], 0
    for idx, after in zip(catch_idxs, afters):
        sock, frames, elapsed = await ctx.pool.open_one(idx, after=after)
        await sock.ws.close()
        catch_times.append(elapsed)
        short += len(frames) != 50
    ls, us, cs = summary_ms(list_lat), summary_ms(unread_lat), summary_ms(catch_times)
    return {
        "rows": total_rows, "users": n_users, "requests": n_req, "concurrency": C,
        "list_p50_ms": ls["p50_ms"], "list_p99_ms": ls["p99_ms"], "list_max_ms": ls["max_ms"],
        "unread_p50_ms": us["p50_ms"], "unread_p99_ms": us["p99_ms"], "unread_max_ms": us["max_ms"],
        "catchup_p50_ms": cs["p50_ms"], "catchup_p99_ms": cs["p99_ms"], "catchup_max_ms": cs["max_ms"],
        "catchups_not_50_frames": short, "errors": sum(errors.values()), "error_statuses": errors,
        "error_samples": (err1 + err2)[:5], "cpu": cpu,
    }


# --- 7. Churn (only when named) ------------------------------------------------------------------


async def churn(ctx: Context) -> dict:
    """
    Sockets come and go: N sockets opened (each to sync.done) and all closed, R rounds. The servers'
    RSS after each round; what a closed socket leaves behind (a leak, or garbage the collector has
    not found yet) shows as growth from the first round to the last.
    """
    N, R = ctx.sizes["churn_sockets"], ctx.sizes["churn_rounds"]
    pool = ctx.pool
    await pool.close_all()
    after = ctx.max_id()
    meter = ctx.meter()
    meter.start()
    rss, failed, opened = [], 0, 0
    for _ in range(R):
        cs = await pool.ensure(N, after=after, concurrency=64)
        failed += cs.failed
        opened += cs.count
        await pool.close_all()
        await asyncio.sleep(1.0)  # the servers finish closing
        rss.append(rss_bytes(ctx.stack.pids))
    cpu = meter.stop()
    closed_after_first = (R - 1) * N
    return {
        "rounds": R, "sockets_per_round": N, "opened": opened, "failed": failed,
        "rss_mb_per_round": [round(b / 2**20, 1) for b in rss],
        "rss_first_round_mb": round(rss[0] / 2**20, 1), "rss_last_round_mb": round(rss[-1] / 2**20, 1),
        "rss_growth_kb_per_closed_socket": round((rss[-1] - rss[0]) / closed_after_first / 1024, 2) if closed_after_first else None,
        "unexpected_closes": pool.unexpected_closes, "cpu": cpu,
    }


FUNCS = {"idle": idle, "broadcast": broadcast, "directed": directed, "bulk": bulk, "catchup": catchup, "large": large, "churn": churn}


def start_profilers(ctx: Context, name: str) -> list[tuple[subprocess.Popen, str]]:
    out = []
    stamp = f"{time.strftime('%H%M%S')}-{time.perf_counter_ns() % 10**6}"
    pyspy = Path(sys.executable).with_name("py-spy")
    for pid in ctx.stack.pids:
        path = str(ctx.stack.workdir / f"profile-{name}-{stamp}-{pid}.txt")
        cmd = [str(pyspy), "record", "-p", str(pid), "-r", "200", "-f", "raw", "-o", path]
        if not getattr(ctx.args, "profile_wall", False):
            cmd.append("--gil")  # CPU profile: only samples of the thread holding the GIL
        proc = subprocess.Popen(cmd,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((proc, path))
    time.sleep(1.0)  # py-spy attaches
    return out


def stop_profilers(profilers) -> list[str]:
    paths = []
    for proc, path in profilers:
        proc.send_signal(signal.SIGINT)
    for proc, path in profilers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        paths.append(path)
    return paths


async def _sample_backends(ctx: Context, peak: dict) -> None:
    """The most PostgreSQL connections of the bench database seen during a scenario (leaks show here)."""
    while True:
        n = ctx.pg_backends() if ctx.pg_backends else len(postgres_backend_pids(ctx.dbname))
        peak["pg"] = max(peak["pg"], n)
        await asyncio.sleep(0.5)


async def run_all(ctx: Context, names: list[str]) -> dict:
    max_sockets = max(ctx.sizes["idle_sockets"], ctx.sizes["broadcast_users"])
    ctx.pool = Pool(ctx.stack.ports, ctx.user_ids, ctx.tokens, source_hosts=math.ceil(max_sockets / 25000))
    results = {}
    try:
        for name in names:
            print(f"== {name}", flush=True)
            ctx.current = name
            ctx.profiles = []
            t0 = time.perf_counter()
            peak = {"pg": 0}
            sampler = asyncio.get_running_loop().create_task(_sample_backends(ctx, peak))
            try:
                r = await FUNCS[name](ctx)
            except Exception as exc:
                traceback.print_exc()
                r = {"error": f"{type(exc).__name__}: {exc}"}
            sampler.cancel()
            r["pg_connections_max"] = peak["pg"]
            if ctx.profiles:
                r["profiles"] = sorted(set(ctx.profiles))
                print(f"   profiles: {r['profiles']}", flush=True)
            r["scenario_s"] = round(time.perf_counter() - t0, 1)
            results[name] = r
            print("   " + orjson.dumps({k: v for k, v in r.items() if k not in ("cpu", "requests")}, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
            print("   cpu " + orjson.dumps(r.get("cpu")).decode(), flush=True)
            if not ctx.stack.alive():
                print("a server process died:\n" + ctx.stack.log_tail(), flush=True)
                break
    finally:
        await ctx.pool.close_all()
    return results
