#!/usr/bin/env python
"""
Growth curves (issue 22): how the latencies grow with one user's inbox and with the recipients of
one send. Starts its own stack as bench/run.py does (a private PostgreSQL cluster and redis-server;
by default the image's deployment, scripts/serve.py running one daphne per core on one port), then
measures, per point:

- ``inbox-size``: one user whose inbox holds 1k, 10k, 100k, 1M, 10M stored notifications (``--sizes``),
  with one socket open: K sends to that user through REST (``--requests``, one at a time unless
  ``--concurrency``), REST round trip and end-to-end latency (request start -> frame received)
  p50/p99; then K first pages of ``GET /api/notifications/`` and K unread counts, p50/p99.
  Each size is its own user (``bench-inbox-<rows>``) seeded once in SQL and kept in the cluster, so a
  run after the first seeds nothing and measures every size.
- ``bulk``: 1, 10, 100, 1,000, 10,000 recipients (``--recipients``), each with a socket open: R single
  bulk sends (``--bulk-requests``), each waited for until every recipient's socket has it: the
  request's time p50/max, the time until the last recipient's socket got it p50/max, lost, duplicated.

    python bench/curves.py                         # both curves (the first run seeds 11.1M rows: minutes)
    python bench/curves.py --quick                 # inbox up to 100,000 rows, bulk up to 1,000 recipients
    python bench/curves.py --curves bulk --recipients 1 100 10000 --bulk-requests 10
    python bench/plots.py                          # the PNGs in docs/ from the results

Writes bench/results/curves-latest.json and a dated copy <UTC time>-curves.json (--quick:
curves-latest-quick.json only). See bench/README.md, "Growth curves".
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import orjson  # noqa: E402

import run as bench  # noqa: E402  (bench/run.py: the stack's setup and environment, users, tokens, machine info)
from loadgen import Pool, percentile, run_async, run_requests, summary_ms  # noqa: E402
from scenarios import SEND_PATH, Context, close_conns, first_arrivals, ms, wait_for_count  # noqa: E402

CURVES = ["inbox-size", "bulk"]
FULL = {"sizes": [1_000, 10_000, 100_000, 1_000_000, 10_000_000], "requests": 300,
        "recipients": [1, 10, 100, 1_000, 10_000], "bulk_requests": 5}
QUICK = {"sizes": [1_000, 10_000, 100_000], "requests": 100, "recipients": [1, 10, 100, 1_000], "bulk_requests": 5}
SEND_CATEGORY = "bench-curve-send"  # the inbox-size curve's sends, deleted after each point
BULK_CATEGORY = "bench-curve-bulk"
SEED_CHUNK = 100_000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--curves", nargs="+", choices=CURVES, default=CURVES, metavar="NAME", help=f"any of {', '.join(CURVES)}")
    p.add_argument("--quick", action="store_true", help="inbox sizes up to 100,000 rows, 100 requests, bulk up to 1,000 recipients")
    p.add_argument("--sizes", nargs="+", type=int, help=f"inbox sizes in rows (default {FULL['sizes']})")
    p.add_argument("--requests", type=int, help=f"sends, list and unread-count requests per inbox size (default {FULL['requests']})")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight for the inbox-size curve (default 1: one at a time)")
    p.add_argument("--recipients", nargs="+", type=int, help=f"bulk sizes (default {FULL['recipients']}; at most MAX_RECIPIENTS)")
    p.add_argument("--bulk-requests", type=int, help=f"bulk sends per size, one after the other (default {FULL['bulk_requests']})")
    # The stack, as bench/run.py's flags of the same names.
    p.add_argument("--server", choices=["daphne", "uvicorn", "granian", "serve", "serve-daphne"], default="serve",
                   help="serve (default): the image's deployment (scripts/serve.py: --workers daphne processes on one port, "
                        "and the fallbacks' worker)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server processes (default: cores, as the image)")
    p.add_argument("--http-workers", type=int, default=0,
                   help="REST API processes of their own (default 0: the servers above serve the REST API too, as the image)")
    p.add_argument("--http-server", choices=["daphne", "uvicorn", "granian"], default="uvicorn", help="server of --http-workers")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""),
                   help="use this PostgreSQL database (created and migrated if missing) instead of a private cluster")
    p.add_argument("--pg-datadir", default=os.environ.get("BENCH_CURVES_PG_DATADIR", "/tmp/inbox-curves-pg/data"),
                   help="data directory of the private cluster, kept between runs (default: not bench/run.py's, whose "
                        "figures the 11M rows would change)")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""),
                   help="use this Redis instead of starting a private redis-server (its db is FLUSHed)")
    p.add_argument("--settings", default="notifications_site.settings", help="DJANGO_SETTINGS_MODULE of the servers")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the servers")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument("--output", default=str(HERE / "results"), help="directory of curves-latest.json and the dated copies")
    p.add_argument("--no-save", action="store_true", help="print only, write no result files")
    p.set_defaults(profile=None)  # scenarios.Context.meter reads it (no profiling here)
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    for name in ("sizes", "requests", "recipients", "bulk_requests"):
        if getattr(args, name) is None:
            setattr(args, name, base[name])
    args.sizes = sorted(set(args.sizes))
    args.recipients = sorted(set(args.recipients))
    return args


# --- Setup ---------------------------------------------------------------------------------------


def inbox_users(sizes: list[int]) -> dict:
    """One user per inbox size, ``bench-inbox-<rows>`` (unusable password, as run.py's users)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    User = get_user_model()
    return {rows: User.objects.get_or_create(username=f"bench-inbox-{rows}", defaults={"password": make_password(None)})[0]
            for rows in sizes}


def forget_earlier_runs() -> None:
    """What earlier runs of this tool sent (not the seeds): each point starts from the seeded rows alone."""
    from django.db import connection

    with connection.cursor() as c:
        sent = "SELECT id FROM inbox_notification WHERE category IN (%s, %s)"
        # What the fallbacks' worker recorded for them first: its rows reference the notifications.
        c.execute(f"DELETE FROM inbox_fallbackdelivery WHERE notification_id IN ({sent})", [SEND_CATEGORY, BULK_CATEGORY])
        c.execute(f"DELETE FROM inbox_notification WHERE id IN ({sent})", [SEND_CATEGORY, BULK_CATEGORY])
        if c.rowcount:
            print(f"deleted {c.rowcount:,} notifications of earlier runs", flush=True)


def seed_inbox(user_id: int, sender_id: int, rows: int) -> float:
    """
    Fill the user's inbox up to ``rows`` stored notifications (INSERT ... SELECT generate_series,
    100,000 a chunk), then VACUUM ANALYZE. The rows look like a real inbox: four categories with
    their own titles, messages, data and links, all delivered, two thirds read (and seen), one
    every two seconds from 2025-01-01 on, oldest first. Returns the seconds spent (0 when there).
    """
    from django.db import connection

    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM inbox_notification WHERE recipient_id = %s AND category <> %s", [user_id, SEND_CATEGORY])
        have = c.fetchone()[0]
        if have >= rows:
            return 0.0
        t0 = time.perf_counter()
        print(f"seeding {rows - have:,} notifications for the {rows:,}-row inbox ...", flush=True)
        for start in range(have, rows, SEED_CHUNK):
            stop = min(rows, start + SEED_CHUNK)
            c.execute(
                """
                INSERT INTO inbox_notification
                    (recipient_id, sender_id, category, title, message, data, link, created_at, seen_at, delivered_at,
                     read_at, expires_at)
                SELECT %(uid)s, %(sender)s, k.category, k.title || ' #' || g, k.message,
                       jsonb_build_object('ref', g, 'kind', k.category), CASE WHEN k.category = 'orders' THEN '/orders/' || g ELSE '' END,
                       t.ts, r.read_at, t.ts, r.read_at, NULL
                FROM generate_series(%(start)s, %(stop)s - 1) AS g,
                     LATERAL (SELECT timestamptz '2025-01-01 00:00:00+00' + g * interval '2 seconds') AS t(ts),
                     LATERAL (SELECT CASE WHEN g %% 3 = 0 THEN NULL ELSE t.ts + interval '1 hour' END) AS r(read_at),
                     LATERAL (SELECT (ARRAY['orders', 'social', 'security', 'general'])[1 + g %% 4],
                                     (ARRAY['Your order has shipped', 'New comment on your post', 'New sign-in to your account',
                                            'Your weekly summary'])[1 + g %% 4],
                                     (ARRAY['It is on its way; the tracking number and the delivery date are in your orders.',
                                            'Someone replied to what you wrote; open the thread to read and answer.',
                                            'A new device signed in to your account. If it was not you, change your password.',
                                            'What happened this week in the projects you follow, in one page.'])[1 + g %% 4]
                             ) AS k(category, title, message)
                """,
                {"uid": user_id, "sender": sender_id, "start": start, "stop": stop},
            )
            if stop - have > SEED_CHUNK:
                print(f"  {stop:,}/{rows:,}", flush=True)
    bench.vacuum()
    return time.perf_counter() - t0


def delete_sends(user_id: int) -> None:
    from django.db import connection

    with connection.cursor() as c:
        sent = "SELECT id FROM inbox_notification WHERE recipient_id = %s AND category = %s"
        c.execute(f"DELETE FROM inbox_fallbackdelivery WHERE notification_id IN ({sent})", [user_id, SEND_CATEGORY])
        c.execute(f"DELETE FROM inbox_notification WHERE id IN ({sent})", [user_id, SEND_CATEGORY])


# --- Curves --------------------------------------------------------------------------------------


def frame_collector(key: str):
    """A Pool handler keeping each frame of this run (``key``) once: send number -> arrival time, and duplicates."""
    got: dict[int, float] = {}
    state = {"dup": 0}

    def on_frame(idx, raw, t):
        if key not in raw:
            return
        d = orjson.loads(raw)["notification"]["data"]
        if d["s"] in got:
            state["dup"] += 1
        else:
            got[d["s"]] = t - d["t"]

    return on_frame, got, state


async def inbox_point(ctx: Context, args, rows: int, user, token: str, seed_s: float) -> dict:
    """At one inbox size: the user's socket, K sends to the user, K first pages, K unread counts."""
    K, C = args.requests, args.concurrency
    pool = Pool(ctx.stack.ports, [user.id], [token])
    cs = await pool.ensure(1, after=ctx.max_id())
    key = secrets.token_hex(4)
    on_frame, got, state = frame_collector(key)
    pool.handler = on_frame
    conns = await ctx.http_conns(C)

    def send(i):
        body = orjson.dumps({"recipient": user.id, "title": "bench curve", "category": SEND_CATEGORY,
                             "data": {"t": time.time(), "s": i, "k": key}})
        return "POST", SEND_PATH, ctx.sender_token, body

    meter = ctx.meter()
    meter.start()
    rest, st_send, err_send, _ = await run_requests(conns, K, send)
    ok = st_send.get(201, 0)
    await wait_for_count(lambda: len(got), ok, idle=5)
    lists, st_list, err_list, _ = await run_requests(conns, K, lambda i: ("GET", "/api/notifications/", token, None))
    unread, st_unread, err_unread, _ = await run_requests(conns, K, lambda i: ("GET", "/api/notifications/unread-count/", token, None))
    cpu = meter.stop()
    pool.handler = lambda *a: None
    close_conns(conns)
    await pool.close_all()
    r, e, ls, us = summary_ms(rest), summary_ms(list(got.values())), summary_ms(lists), summary_ms(unread)
    errors = (K - ok) + (K - st_list.get(200, 0)) + (K - st_unread.get(200, 0))
    return {
        "rows": rows, "user": user.username, "requests": K, "concurrency": C,
        "rest_p50_ms": r["p50_ms"], "rest_p99_ms": r["p99_ms"], "rest_max_ms": r["max_ms"],
        "e2e_p50_ms": e["p50_ms"], "e2e_p99_ms": e["p99_ms"], "e2e_max_ms": e["max_ms"],
        "list_p50_ms": ls["p50_ms"], "list_p99_ms": ls["p99_ms"], "list_max_ms": ls["max_ms"],
        "unread_p50_ms": us["p50_ms"], "unread_p99_ms": us["p99_ms"], "unread_max_ms": us["max_ms"],
        "connect_ms": ms(cs.latencies[0]) if cs.latencies else None, "connect_failed": cs.failed,
        "lost": ok - len(got), "duplicated": state["dup"], "errors": errors,
        "error_samples": (err_send + err_list + err_unread)[:5], "unexpected_closes": pool.unexpected_closes,
        "seed_s": round(seed_s, 1), "cpu": cpu,
    }


async def inbox_size_curve(ctx: Context, args, users: dict, sender_id: int) -> list[dict]:
    from django.db import connection

    points = []
    for rows in args.sizes:
        user = users[rows]
        seed_s = seed_inbox(user.id, sender_id, rows)  # no socket open meanwhile (the loop is blocked)
        connection.close()
        point = await inbox_point(ctx, args, rows, user, bench.mint_tokens([user])[0], seed_s)
        delete_sends(user.id)
        connection.close()
        points.append(point)
        print("   inbox " + orjson.dumps({k: v for k, v in point.items() if k != "cpu"}).decode(), flush=True)
        if not ctx.stack.alive():
            print("a server process died:\n" + ctx.stack.log_tail(), flush=True)
            break
    return points


async def bulk_point(ctx: Context, pool: Pool, N: int, R: int) -> dict:
    """R bulk sends to users[0:N], one after the other, each waited for until every socket has it."""
    cs = await pool.ensure(N, after=ctx.max_id(), concurrency=64)
    recipients = ctx.user_ids[:N]
    (conn,) = await ctx.http_conns(1)
    responses, to_all, statuses, lost, dup = [], [], {}, 0, 0
    meter = ctx.meter()
    meter.start()
    for _ in range(R):
        key = secrets.token_hex(4)
        pool.handler, recv, state = first_arrivals(key)
        t0 = time.time()
        body = orjson.dumps({"recipients": recipients, "title": "bench curve bulk", "category": BULK_CATEGORY,
                             "data": {"t": t0, "k": key}})
        status, _ = await conn.request("POST", SEND_PATH, ctx.sender_token, body)
        responses.append(time.time() - t0)
        statuses[status] = statuses.get(status, 0) + 1
        expected = N if status == 201 else 0
        await wait_for_count(lambda: len(recv), expected, idle=5)
        # Every socket has it: the last arrival; undefined (None) when some never got it.
        to_all.append(max(recv.values()) - t0 if expected and len(recv) == N else None)
        lost += expected - len(recv)
        dup += state["dup"]
    cpu = meter.stop()
    pool.handler = lambda *a: None
    conn.close()
    reached = [t for t in to_all if t is not None]
    ok = statuses.get(201, 0)
    return {
        "recipients": N, "requests": R, "statuses": statuses, "connect_failed": cs.failed, "sockets_open": len(pool.socks),
        "request_p50_ms": ms(percentile(responses, 50)), "request_max_ms": ms(max(responses)),
        "all_delivered_p50_ms": ms(percentile(reached, 50)), "all_delivered_max_ms": ms(max(reached)) if reached else None,
        "request_ms": [ms(t) for t in responses], "all_delivered_ms": [ms(t) for t in to_all],
        "lost": lost, "duplicated": dup, "unexpected_closes": pool.unexpected_closes,
        "server_cpu_us_per_recipient": round(1e6 * cpu["servers_cpu_s"] / (ok * N), 1) if ok else None, "cpu": cpu,
    }


async def bulk_curve(ctx: Context, args) -> list[dict]:
    pool = Pool(ctx.stack.ports, ctx.user_ids, ctx.tokens)
    points = []
    try:
        for N in args.recipients:
            point = await bulk_point(ctx, pool, N, args.bulk_requests)
            points.append(point)
            print("   bulk " + orjson.dumps({k: v for k, v in point.items() if k != "cpu"}, option=orjson.OPT_NON_STR_KEYS).decode(),
                  flush=True)
            if not ctx.stack.alive():
                print("a server process died:\n" + ctx.stack.log_tail(), flush=True)
                break
    finally:
        await pool.close_all()
    return points


async def warm_up(ctx: Context, sender_id: int, conns: int = 8, each: int = 5) -> None:
    """
    Sends, list pages and unread counts on several connections, and a few sockets, before the first
    point: the first requests of a server process (its database connection, its first queries) are
    slow, and new connections land on any of the processes sharing the port.
    """
    http = await ctx.http_conns(conns)
    body = orjson.dumps({"recipient": sender_id, "title": "bench curve warm-up", "category": SEND_CATEGORY, "data": {}})
    for req in (("POST", SEND_PATH, ctx.sender_token, body), ("GET", "/api/notifications/", ctx.sender_token, None),
                ("GET", "/api/notifications/unread-count/", ctx.sender_token, None)):
        await run_requests(http, conns * each, lambda i, req=req: req)
    close_conns(http)
    pool = Pool(ctx.stack.ports, [sender_id] * conns, [ctx.sender_token] * conns)
    await pool.ensure(conns, after=ctx.max_id())
    await pool.close_all()
    delete_sends(sender_id)


async def measure(ctx: Context, args, users: dict, sender_id: int) -> dict:
    await warm_up(ctx, sender_id)
    out = {}
    if "inbox-size" in args.curves:
        print("== inbox-size", flush=True)
        out["inbox_size"] = await inbox_size_curve(ctx, args, users, sender_id)
    if "bulk" in args.curves:
        print("== bulk", flush=True)
        out["bulk"] = await bulk_curve(ctx, args)
    return out


# --- Table ---------------------------------------------------------------------------------------

INBOX_COLUMNS = [("rows", "rows"), ("rest_p50_ms", "REST p50"), ("rest_p99_ms", "REST p99"), ("e2e_p50_ms", "e2e p50"),
                 ("e2e_p99_ms", "e2e p99"), ("list_p50_ms", "list p50"), ("list_p99_ms", "list p99"),
                 ("unread_p50_ms", "unread p50"), ("unread_p99_ms", "unread p99"), ("lost", "lost"), ("errors", "errors")]
BULK_COLUMNS = [("recipients", "recipients"), ("request_p50_ms", "request p50"), ("request_max_ms", "request max"),
                ("all_delivered_p50_ms", "all delivered p50"), ("all_delivered_max_ms", "all delivered max"),
                ("lost", "lost"), ("duplicated", "duplicated")]


def render_tables(results: dict) -> str:
    parts = []
    if "inbox_size" in results:
        parts.append("Inbox size (ms; REST = the send's round trip, e2e = request start -> frame received)\n"
                     + bench.column_table(results["inbox_size"], INBOX_COLUMNS))
    if "bulk" in results:
        parts.append("Bulk sends (ms; all delivered = request start -> the last recipient's frame)\n"
                     + bench.column_table(results["bulk"], BULK_COLUMNS))
    return "\n\n".join(parts)


# --- Main ----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    nofile = bench.raise_nofile()
    secret_key = "bench-" + secrets.token_urlsafe(40)
    with bench.private_database(args) as pg:
        doc = run(args, secret_key, pg, nofile, argv)
    return report(args, doc)


def run(args, secret_key: str, pg, nofile: int, argv) -> dict:
    from stack import Stack, make_workdir

    workdir = make_workdir()
    bench.ensure_database(args.database_url)
    bench.django_setup(args, secret_key)
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    users, sender = bench.ensure_users(max(args.recipients) if "bulk" in args.curves else 0)
    inbox = inbox_users(args.sizes) if "inbox-size" in args.curves else {}
    forget_earlier_runs()
    bench.vacuum()
    tokens = bench.mint_tokens(users)
    sender_token = bench.mint_tokens([sender])[0]
    connection.close()

    redis_srv, redis_url = bench.start_redis(args, workdir)
    stack = Stack(args.server, args.workers, bench.server_env(args, secret_key, redis_url), workdir,
                  http_kind=args.http_server, http_workers=args.http_workers)
    print(f"starting {args.workers} {args.server} process(es){bench.http_topology(args)}, redis {redis_url} ...", flush=True)
    started = dt.datetime.now(dt.timezone.utc)
    info, commit = bench.machine_info(), bench.git_commit()
    try:
        stack.start()
        print(f"servers on ports {stack.ports} (pids {stack.pids}); logs in {workdir}", flush=True)
        ctx = bench.scenario_context(args, {}, stack, redis_srv, redis_url, pg, users, tokens, sender_token)
        results = run_async(measure(ctx, args, inbox, sender.id))
    finally:
        stack.stop()
        if redis_srv:
            redis_srv.stop()
    return {
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/curves.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "git": commit, "note": args.note,
        "machine": info | {"loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "stack": bench.stack_info(args, "private" if redis_srv else redis_url, pg, nofile),
        "mode": "quick" if args.quick else "full",
        "sizes": {"inbox_rows": args.sizes, "requests": args.requests, "concurrency": args.concurrency,
                  "recipients": args.recipients, "bulk_requests": args.bulk_requests},
        **results,
    }


def report(args, doc: dict) -> int:
    info = doc["machine"]
    doc["table_markdown"] = render_tables(doc)
    print()
    print(f"Inbox growth curves {doc['started']} ({doc['mode']}), {args.workers} x {args.server}{bench.http_topology(args)}, "
          f"git {doc['git']}, {info['cores']} cores {info['cpu']}, load avg at start {info['loadavg_start']}")
    print(doc["table_markdown"])
    if not args.no_save:
        if args.quick:
            names = ["curves-latest-quick.json"]
        else:
            stamp = dt.datetime.fromisoformat(doc["started"]).strftime("%Y-%m-%dT%H%M%SZ")
            names = ["curves-latest.json", f"{stamp}-curves.json"]
        bench.write_results(args.output, doc, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
