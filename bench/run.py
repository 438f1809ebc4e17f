#!/usr/bin/env python
"""
Inbox benchmark suite (issue 5): one command starts its own server stack, runs the scenarios,
prints a table and writes bench/results/latest.json (plus a dated copy).

    python bench/run.py                      # the full suite (about 2 minutes on 2 cores once the large inboxes are seeded)
    python bench/run.py --quick              # smaller numbers, for development
    python bench/run.py --scenarios directed bulk --workers 2 --server daphne
    python bench/run.py --scenarios directed bulk broadcast --peer   # and the seed's Node.js peer, side by side

See bench/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

SCENARIOS = ["idle", "broadcast", "directed", "bulk", "catchup", "large"]
EXTRA_SCENARIOS = ["churn"]  # run only when named in --scenarios
ALL_SCENARIOS = SCENARIOS + EXTRA_SCENARIOS

FULL = {
    "directed_users": 1000, "directed_sends": 20000, "directed_concurrency": 16,
    "bulk_recipients": 1000, "bulk_requests": 20,
    "broadcast_users": 10000, "broadcast_requests": 3,
    "idle_sockets": 10000, "idle_hold_s": 15, "idle_concurrency": 50,
    "catchup_missed": 1000, "catchup_reps": 5,
    "large_rows": 1_000_000, "large_users": 10000, "large_requests": 1000, "large_catchups": 200, "large_concurrency": 1,
    "churn_sockets": 5000, "churn_rounds": 8,
}
QUICK = {
    "directed_users": 200, "directed_sends": 2000, "directed_concurrency": 16,
    "bulk_recipients": 500, "bulk_requests": 5,
    "broadcast_users": 2000, "broadcast_requests": 1,
    "idle_sockets": 2000, "idle_hold_s": 10, "idle_concurrency": 50,
    "catchup_missed": 1000, "catchup_reps": 2,
    "large_rows": 100_000, "large_users": 2000, "large_requests": 200, "large_catchups": 50, "large_concurrency": 1,
    "churn_sockets": 1000, "churn_rounds": 3,
}

TARGETS = {
    "directed.delivered_per_s": (">=", 1000),
    "directed.e2e_p99_ms": ("<=", 50),
    "directed.lost": ("==", 0),
    "directed.duplicated": ("==", 0),
    "bulk.delivered_recipients_per_s": (">=", 10000),
    "bulk.stored_recipients_per_s": (">=", 10000),
    "broadcast.time_to_all_ms_max": ("<=", 2000),
    "idle.kb_per_socket": ("<=", 40),
    "idle.closed_by_server_while_idle": ("==", 0),
    "catchup.time_to_sync_done_ms_max": ("<", 500),
    "large.list_p99_ms": ("<", 20),
    "large.unread_p99_ms": ("<", 20),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller numbers (development)")
    p.add_argument("--scenarios", nargs="+", choices=ALL_SCENARIOS, default=SCENARIOS, metavar="NAME",
                   help=f"any of {', '.join(SCENARIOS)} (run in that order)")
    p.add_argument("--server", choices=["daphne", "uvicorn", "granian", "serve", "serve-daphne"], default="daphne",
                   help="serve: the image's deployment (scripts/serve.py: --workers uvicorn processes on one port, and the "
                        "fallbacks' worker; use with --http-workers 0); serve-daphne: the same with daphne")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server processes, one port each (default: cores)")
    p.add_argument("--http-workers", type=int, default=os.cpu_count() or 1,
                   help="REST API processes of their own, the servers above then serving WebSockets only, as behind a proxy "
                        "that routes /ws/ to them (default: cores; 0: the servers above serve the REST API too)")
    p.add_argument("--http-server", choices=["daphne", "uvicorn", "granian"], default="uvicorn", help="server of --http-workers (default: uvicorn)")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", ""),
                   help="use this PostgreSQL database (created and migrated if missing) instead of a private cluster")
    p.add_argument("--pg-datadir", default=os.environ.get("BENCH_PG_DATADIR", "/tmp/inbox-bench-pg/data"),
                   help="data directory of the private PostgreSQL cluster (kept between runs)")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", ""),
                   help="use this Redis instead of starting a private redis-server (its db is FLUSHed)")
    p.add_argument("--settings", default="notifications_site.settings", help="DJANGO_SETTINGS_MODULE of the servers")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra environment for the servers")
    p.add_argument("--set", action="append", default=[], metavar="NAME=N", help="override a size, e.g. --set directed_sends=5000")
    p.add_argument("--note", default="", help="free text stored with the results (e.g. 'machine busy')")
    p.add_argument("--output", default=str(HERE / "results"), help="directory of latest.json and the dated copies")
    p.add_argument("--no-save", action="store_true", help="print only, write no result files")
    p.add_argument("--label", default="", help="name of a compared configuration: writes latest-LABEL.json, not latest.json")
    p.add_argument("--keep-stack", action="store_true", help="leave the servers running at the end (profiling); prints their pids")
    p.add_argument("--profile", metavar="SCENARIO", help="py-spy record every server process during this scenario "
                   "(raw collapsed stacks in the work directory; summarize with bench/profile_top.py)")
    p.add_argument("--profile-wall", action="store_true", help="profile every thread (wall clock) instead of the GIL holder (CPU)")
    p.add_argument("--peer", action="store_true",
                   help="after Inbox's scenarios, run the directed, bulk and broadcast ones among them against the seed's "
                        "Node.js peer (in memory, then storing in PostgreSQL) with the same load generator and sizes, and "
                        "print the ratios (bench/peer.py)")
    p.add_argument("--peer-only", action="store_true", help="the peer's side of --peer alone (no Inbox servers, no ratios)")
    p.add_argument("--peer-src", default=os.environ.get("BENCH_PEER_SRC", str(ROOT.parent / "shared" / "peer")),
                   help="the peer's sources (read-only; copied to bench/.peer and npm-installed there)")
    p.add_argument("--peer-database-url", default=os.environ.get("BENCH_PEER_DATABASE_URL", ""),
                   help="the storing peer's database (default: database 'peer' on Inbox's PostgreSQL server)")
    args = p.parse_args(argv)
    if args.keep_stack and (args.peer or args.peer_only):
        p.error("--keep-stack with --peer: Inbox's servers would share the cores with the peer's run")
    if args.peer_only and not args.label:
        args.label = "peer-only"  # never latest.json: it holds no Inbox figures
    return args


# --- Setup ---------------------------------------------------------------------------------------


def ensure_database(url: str) -> None:
    import psycopg
    from urllib.parse import urlparse

    u = urlparse(url)
    name = u.path.lstrip("/")
    admin = url[: url.rfind("/")] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")


def django_setup(args, secret_key: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "notifications_site.settings"
    os.environ["DATABASE_URL"] = args.database_url
    os.environ["DJANGO_DEBUG"] = "0"
    os.environ["DJANGO_SECRET_KEY"] = secret_key
    os.environ["JWT_ACCESS_TOKEN_SECONDS"] = str(12 * 3600)
    os.environ.pop("REDIS_URL", None)  # the orchestrator never sends through the layer
    # The orchestrator runs a few short ORM calls between measurements from inside its event loop.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    import django

    django.setup()


def ensure_users(n: int):
    """
    Bench users bench-u000000... (bulk_create, unusable password: nobody logs in with a password,
    the load generator gets access tokens minted directly with simplejwt) and one sender with the
    send permission.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Permission

    User = get_user_model()
    have = set(User.objects.filter(username__startswith="bench-u").values_list("username", flat=True))
    names = [f"bench-u{i:06d}" for i in range(n)]
    missing = [name for name in names if name not in have]
    if missing:
        unusable = make_password(None)  # "!..." : no hashing cost, cannot log in
        User.objects.bulk_create([User(username=name, password=unusable) for name in missing], batch_size=5000)
        print(f"created {len(missing)} users")
    users = list(User.objects.filter(username__in=names).order_by("username").only("id", "username"))
    sender, created = User.objects.get_or_create(username="bench-sender", defaults={"password": make_password(None)})
    perm = Permission.objects.get(codename="send_notification", content_type__app_label="inbox")
    sender.user_permissions.add(perm)
    return users, sender


def mint_tokens(users) -> list[str]:
    """Access tokens signed with the servers' secret key, valid 12 h (the consumer closes sockets at expiry)."""
    from rest_framework_simplejwt.tokens import AccessToken

    out = []
    for u in users:
        t = AccessToken.for_user(u)
        t.set_exp(lifetime=dt.timedelta(hours=12))
        out.append(str(t))
    return out


def ensure_large_inboxes(user_ids: list[int], rows: int) -> float:
    """
    ``rows`` stored notifications spread evenly over ``user_ids`` (category 'bench-large'), a third
    unread, all delivered. Made once with INSERT ... SELECT generate_series and kept between runs.
    Returns the seconds spent (0 when already there).
    """
    from django.db import connection

    with connection.cursor() as c:
        c.execute("SELECT count(*), count(DISTINCT recipient_id) FROM inbox_notification WHERE category = 'bench-large'")
        have, spread = c.fetchone()
        if have >= rows and spread >= len(user_ids):
            return 0.0  # a seed at least this large is there (a full run's also serves --quick)
        if have:
            c.execute("DELETE FROM inbox_notification WHERE category = 'bench-large'")
            have = 0
        t0 = time.perf_counter()
        chunk = 100_000
        print(f"seeding {rows - have:,} stored notifications over {len(user_ids):,} users ...", flush=True)
        for start in range(have, rows, chunk):
            stop = min(rows, start + chunk)
            c.execute(
                """
                INSERT INTO inbox_notification
                    (recipient_id, sender_id, category, title, message, data, link, created_at, delivered_at, read_at, expires_at)
                SELECT (%(ids)s::bigint[])[1 + (g %% %(n)s)], NULL, 'bench-large', 'Stored notification ' || g, '',
                       '{}'::jsonb, '', ts, ts, CASE WHEN g %% 3 = 0 THEN NULL ELSE ts END, NULL
                FROM generate_series(%(start)s, %(stop)s - 1) AS g,
                     LATERAL (SELECT now() - make_interval(secs => %(rows)s - g)) AS t(ts)
                """,
                {"ids": user_ids, "n": len(user_ids), "start": start, "stop": stop, "rows": rows},
            )
            print(f"  {stop:,}/{rows:,}", flush=True)
    vacuum()
    return time.perf_counter() - t0


def forget_earlier_runs() -> float:
    """
    Delete what earlier runs sent (every category but the 'bench-large' seed) and vacuum, so each
    run starts from the same rows: unread counts and catch-ups of the bench users otherwise grew
    with every run (a broadcast adds an unread row to each of 10,000 users). Returns the seconds spent.
    """
    from django.db import connection

    t0 = time.perf_counter()
    with connection.cursor() as c:
        sent = "SELECT id FROM inbox_notification WHERE category IN ('bench-directed', 'bench-bulk', 'bench-broadcast', 'bench-catchup')"
        # What the fallbacks' worker recorded for them first: its rows reference the notifications.
        c.execute(f"DELETE FROM inbox_fallbackdelivery WHERE notification_id IN ({sent})")
        c.execute(f"DELETE FROM inbox_notification WHERE id IN ({sent})")
        deleted = c.rowcount
    if deleted:
        print(f"deleted {deleted:,} notifications of earlier runs", flush=True)
    vacuum()
    return time.perf_counter() - t0


def vacuum() -> None:
    """
    VACUUM ANALYZE the notifications, as autovacuum keeps a live table: right after a bulk write
    the visibility map is unset, and reads visit the heap for rows an index could answer. ANALYZE
    the users too, as the README asks after a bulk import of users: the bench creates its users in
    bulk, and until autovacuum gets to them the send function's cached plan reads the whole users
    table for every send (bench/JOURNAL.md, finding 30).
    """
    from django.db import connection

    with connection.cursor() as c:  # VACUUM cannot run in a transaction; Django autocommits here
        c.execute("VACUUM ANALYZE inbox_notification")
        c.execute("ANALYZE auth_user")


def max_notification_id() -> int:
    from django.db import connection

    with connection.cursor() as c:
        c.execute("SELECT coalesce(max(id), 0) FROM inbox_notification")
        return c.fetchone()[0]


def count_stored(category: str, after_id: int) -> int:
    from django.db import connection

    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM inbox_notification WHERE id > %s AND category = %s", [after_id, category])
        return c.fetchone()[0]


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> str:
    """HEAD, plus '+dirty-<hash of the uncommitted diff of the service code>' when the tree differs."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        diff = subprocess.run(["git", "diff", "HEAD", "--", "inbox", "realtime", "notifications_site", "requirements.txt"],
                              cwd=ROOT, capture_output=True, timeout=5).stdout
        untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", "inbox", "realtime", "notifications_site"],
                                   cwd=ROOT, capture_output=True, timeout=5).stdout
        if not diff and not untracked:
            return out.stdout.strip()
        import hashlib

        return out.stdout.strip() + "+dirty-" + hashlib.sha1(diff + untracked).hexdigest()[:10]
    except Exception:
        return ""


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def http_topology(args) -> str:
    """How the REST API is served when not by the WebSocket servers, for the printed headline."""
    if not args.http_workers:
        return ""
    return f" (WebSockets) + {args.http_workers} x {args.http_server} (REST API)"


@contextlib.contextmanager
def private_database(args, keep: bool = False):
    """
    A private PostgreSQL cluster in ``--pg-datadir`` unless ``--database-url`` names a database:
    ``args.database_url`` then points at it, and it stops on the way out (not with ``keep``).
    Yields the cluster (stack.PrivatePostgres), or None with ``--database-url``.
    bench/scale.py and bench/curves.py start theirs with the same.
    """
    from stack import PrivatePostgres

    if args.database_url:
        yield None
        return
    pg = PrivatePostgres(Path(args.pg_datadir)).start()
    args.database_url = pg.url
    print(f"private PostgreSQL on port {pg.port} ({args.pg_datadir})", flush=True)
    try:
        yield pg
    finally:
        if not keep:
            pg.stop()


def start_redis(args, workdir: Path):
    """
    ``--redis-url``, or a private redis-server started in ``workdir``; its db is flushed. Returns
    (the private server or None, the URL). The caller stops the server.
    """
    import redis as redis_lib
    from stack import PrivateRedis

    redis_srv = None
    if args.redis_url:
        redis_url = args.redis_url
    else:
        redis_srv = PrivateRedis(workdir).start()
        redis_url = redis_srv.url
    redis_lib.Redis.from_url(redis_url).flushdb()
    return redis_srv, redis_url


def scenario_context(args, sizes: dict, stack, redis_srv, redis_url: str, pg, users, tokens: list[str], sender_token: str):
    """The scenarios' view of the running stack (scenarios.Context); bench/curves.py measures with the same."""
    import scenarios as sc

    return sc.Context(
        args=args, sizes=sizes, stack=stack, redis_url=redis_url, redis_pids=(lambda: redis_srv.pids) if redis_srv else (lambda: []),
        dbname=args.database_url.rsplit("/", 1)[1], user_ids=[u.id for u in users], tokens=tokens,
        sender_token=sender_token, max_id=max_notification_id, count_stored=count_stored,
        pg_cpu=pg.cpu_seconds if pg else None, pg_backends=pg.backends if pg else None,
    )


def stack_info(args, redis: str, pg, nofile: int) -> dict:
    """The results' "stack": the servers, their settings and environment, Redis and PostgreSQL."""
    return {"server": args.server, "workers": args.workers, "http_server": args.http_server if args.http_workers else "",
            "http_workers": args.http_workers, "settings": args.settings, "redis": redis,
            "postgres": "private cluster (defaults, max_connections=1000, shared_buffers=256MB)" if pg
            else args.database_url.rsplit("@", 1)[-1], "server_env": args.server_env, "nofile": nofile}


def write_results(output: str, doc: dict, names: list[str]) -> None:
    """The results as JSON in the directory ``output``, once under each of ``names``; prints the paths."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, default=str)
    written = [out / name for name in names]
    for path in written:
        path.write_text(text)
    print("\nwrote " + ", ".join(str(p) for p in written))


# --- Table ---------------------------------------------------------------------------------------


def check(key: str, value, targets: dict = TARGETS) -> str:
    if key not in targets:
        return ""
    op, target = targets[key]
    if value is None:
        return f"{op} {target:,}  FAIL (not reached)"
    ok = {"<=": value <= target, ">=": value >= target, "<": value < target, "==": value == target}[op]
    return f"{op} {target:,}  {'PASS' if ok else 'FAIL'}"


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def metric_rows(part: str, r: dict, rows: list[tuple[str, str]], targets: dict = TARGETS) -> list[str]:
    """The table rows ``| part | label | value | verdict |`` of one scenario's (or part's) figures ``r``."""
    return [f"| {part} | {label} | {fmt(r.get(key))} | {check(f'{part}.{key}', r.get(key), targets)} |" for key, label in rows]


def column_table(points: list[dict], columns: list[tuple[str, str]]) -> str:
    """A table of one row per point (a level, a size) and one column per (key, label)."""
    lines = ["| " + " | ".join(label for _, label in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(p.get(key)) for key, _ in columns) + " |" for p in points]
    return "\n".join(lines)


def verdicts(parts: dict, targets: dict = TARGETS) -> dict:
    """Each target of a part that ran: its value, the target, and whether it passed."""
    out = {}
    for key, (op, target) in targets.items():
        part, metric = key.split(".")
        if parts.get(part):
            value = parts[part].get(metric)
            out[key] = {"value": value, "target": f"{op} {target}", "pass": check(key, value, targets).endswith("PASS")}
    return out


ROWS = {
    "directed": [
        ("sends_per_s", "sends/s (201 answered)"), ("delivered_per_s", "delivered/s"),
        ("e2e_p50_ms", "end-to-end p50 ms"), ("e2e_p99_ms", "end-to-end p99 ms"), ("e2e_max_ms", "end-to-end max ms"),
        ("http_p99_ms", "POST round trip p99 ms"), ("frame_after_201_p50_ms", "frame after its 201 p50 ms"),
        ("frame_after_201_p99_ms", "frame after its 201 p99 ms"), ("lost", "lost"), ("duplicated", "duplicated"),
        ("misrouted", "frames to the wrong user"), ("http_errors", "HTTP errors"),
        ("unexpected_closes", "sockets closed by the server"), ("server_cpu_ms_per_send", "server CPU ms per send"),
    ],
    "bulk": [
        ("stored_recipients_per_s", "recipients/s stored (201)"), ("delivered_recipients_per_s", "recipients/s delivered"),
        ("response_p50_ms", "POST round trip p50 ms"), ("last_frame_p50_ms", "time to last frame p50 ms"),
        ("last_frame_max_ms", "time to last frame max ms"), ("lost", "lost"), ("duplicated", "duplicated"),
        ("unexpected_closes", "sockets closed by the server (so far)"), ("server_cpu_us_per_recipient", "server CPU us per recipient"),
    ],
    "broadcast": [
        ("response_ms_max", "POST round trip max ms"), ("first_frame_ms_min", "first socket has it ms"),
        ("median_frame_ms", "half the sockets have it ms"), ("last_frame_ms_max", "last frame received ms (worst)"),
        ("time_to_all_ms_max", "every socket has it ms (worst; - if any missed it)"),
        ("lost", "sockets missing it"), ("unexpected_closes", "sockets closed by the server (so far)"),
    ],
    "idle": [
        ("sockets", "sockets open"), ("kb_per_socket", "KB per socket (RSS delta)"),
        ("kb_per_socket_total", "KB per socket (total RSS / sockets)"), ("server_rss_mb", "server RSS MB"),
        ("connects_per_s", "connects/s (to sync.done)"), ("connect_p99_ms", "connect p99 ms"), ("failed", "connect failures"),
        ("closed_by_server_while_idle", "sockets closed by the server while idle"),
        ("server_cpu_ms_per_connect", "server CPU ms per connect"),
    ],
    "catchup": [
        ("frames_per_sync", "catch-up frames per reconnect"), ("time_to_sync_done_ms_p50", "reconnect to sync.done p50 ms"),
        ("time_to_sync_done_ms_max", "reconnect to sync.done max ms"), ("missing", "missing frames"),
    ],
    "large": [
        ("rows", "stored notifications"), ("list_p50_ms", "list p50 ms"), ("list_p99_ms", "list p99 ms"),
        ("unread_p50_ms", "unread count p50 ms"), ("unread_p99_ms", "unread count p99 ms"),
        ("catchup_p50_ms", "catch-up of 50 p50 ms"), ("catchup_p99_ms", "catch-up of 50 p99 ms"), ("errors", "errors"),
    ],
    "churn": [
        ("rounds", "rounds of sockets opened and closed"), ("sockets_per_round", "sockets per round"),
        ("rss_first_round_mb", "server RSS after the first round MB"), ("rss_last_round_mb", "server RSS after the last round MB"),
        ("rss_growth_kb_per_closed_socket", "RSS growth after round 1 per closed socket KB"), ("failed", "connect failures"),
    ],
}


def render_table(results: dict) -> str:
    lines = ["| scenario | metric | value | target |", "|---|---|---|---|"]
    for name in ALL_SCENARIOS:
        r = results.get(name)
        if r is None:
            continue
        lines += metric_rows(name, r, ROWS[name])
        cpu = r.get("cpu") or {}
        if cpu:
            lines.append(
                f"| {name} | CPU % of one core: loadgen / servers / redis / postgres / other processes (window s) | "
                f"{cpu.get('loadgen_cpu_pct')} / {cpu.get('servers_cpu_pct')} / {cpu.get('redis_cpu_pct')} / "
                f"{cpu.get('postgres_cpu_pct')} / {cpu.get('other_cpu_pct')} ({cpu.get('wall_s')}) | |"
            )
        if r.get("pg_connections_max") is not None:
            lines.append(f"| {name} | PostgreSQL connections (peak) | {r['pg_connections_max']} | |")
        if r.get("error"):
            lines.append(f"| {name} | ERROR | {r['error']} | |")
    return "\n".join(lines)


# --- Main ----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    for item in args.set:
        k, _, v = item.partition("=")
        if k not in sizes:
            raise SystemExit(f"unknown size {k!r}; one of {', '.join(sizes)}")
        sizes[k] = int(v)
    scenarios = [s for s in ALL_SCENARIOS if s in args.scenarios]
    nofile = raise_nofile()
    secret_key = "bench-" + secrets.token_urlsafe(40)
    with private_database(args, keep=args.keep_stack) as pg:
        return run(args, sizes, scenarios, nofile, secret_key, pg, argv)


def run(args, sizes, scenarios, nofile, secret_key, pg, argv) -> int:
    from stack import make_workdir

    workdir = make_workdir()
    if args.peer_only:
        started = dt.datetime.now(dt.timezone.utc)
        info, commit = machine_info(), git_commit()
        inbox = {"results": {}, "setup": {}, "redis": "", "started": started, "info": info, "commit": commit}
    else:
        inbox = run_inbox(args, sizes, scenarios, secret_key, pg, workdir)
    peer_doc = None
    if args.peer or args.peer_only:
        peer_doc = run_peer_side(args, sizes, scenarios, pg, workdir, inbox["results"])
    return report(args, sizes, scenarios, nofile, pg, argv, inbox, peer_doc)


def run_peer_side(args, sizes, scenarios, pg, workdir, inbox_results) -> dict:
    """The seed's Node.js peer on the same PostgreSQL server, after Inbox's servers stopped (bench/peer.py)."""
    import peer

    url = args.peer_database_url or args.database_url.rsplit("/", 1)[0] + "/peer"
    ensure_database(url)
    doc = peer.run_peer(args, sizes, scenarios, url, workdir, pg.cpu_seconds if pg else None)
    doc["comparison"] = peer.compare(inbox_results, doc)
    doc["headline"] = peer.headline(doc["comparison"])
    doc["table_markdown"] = peer.render_table(doc["comparison"])
    return doc


def server_env(args, secret_key: str, redis_url: str) -> dict:
    """
    The servers' environment (bench/README.md, "Server environment"): this process's, the bench's
    settings over it, then ``--server-env``. bench/scale.py starts its servers with the same.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": args.settings,
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": secret_key,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": args.database_url,
            "REDIS_URL": redis_url,
            "INBOX_THROTTLE_SEND": "1000000/s",
            "INBOX_THROTTLE_READ": "1000000/s",
            "INBOX_THROTTLE_AUTH": "1000000/s",
            "REDIS_MAX_CONNECTIONS": "20000",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT) + os.pathsep + str(HERE),
        }
    )
    for item in args.server_env:
        k, _, v = item.partition("=")
        env[k] = v
    return env


def run_inbox(args, sizes, scenarios, secret_key, pg, workdir) -> dict:
    from loadgen import run_async
    from stack import Stack

    ensure_database(args.database_url)
    django_setup(args, secret_key)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    n_users = max(
        sizes["directed_users"] if "directed" in scenarios else 0,
        sizes["bulk_recipients"] if "bulk" in scenarios else 0,
        sizes["broadcast_users"] if "broadcast" in scenarios else 0,
        sizes["idle_sockets"] if "idle" in scenarios else 0,
        sizes["directed_users"] + sizes["catchup_reps"] if "catchup" in scenarios else 0,
        sizes["large_users"] if "large" in scenarios else 0,
        sizes["churn_sockets"] if "churn" in scenarios else 0,
        2,
    )
    t0 = time.perf_counter()
    users, sender = ensure_users(n_users)
    tokens = mint_tokens(users)
    sender_token = mint_tokens([sender])[0]
    setup = {"users": len(users), "users_and_tokens_s": round(time.perf_counter() - t0, 2)}
    setup["forget_earlier_runs_s"] = round(forget_earlier_runs(), 1)
    if "large" in scenarios:
        setup["seed_large_s"] = round(ensure_large_inboxes([u.id for u in users[: sizes["large_users"]]], sizes["large_rows"]), 1)
    print(f"setup: {setup}", flush=True)
    from django.db import connection

    connection.close()  # no idle connection of ours during the measurements

    redis_srv, redis_url = start_redis(args, workdir)
    env = server_env(args, secret_key, redis_url)
    stack = Stack(args.server, args.workers, env, workdir, http_kind=args.http_server, http_workers=args.http_workers)
    print(f"starting {args.workers} {args.server} process(es){http_topology(args)}, redis {redis_url} ...", flush=True)
    started = dt.datetime.now(dt.timezone.utc)
    info = machine_info()
    commit = git_commit()  # the code the servers load now
    try:
        stack.start()
        print(f"servers on ports {stack.ports} (HTTP {stack.http_ports}; pids {stack.pids}); logs in {workdir}", flush=True)
        import scenarios as sc

        ctx = scenario_context(args, sizes, stack, redis_srv, redis_url, pg, users, tokens, sender_token)
        results = run_async(sc.run_all(ctx, scenarios))
    finally:
        if args.keep_stack:
            print(f"--keep-stack: servers still running, pids {stack.pids}, redis pid {redis_srv.pids if redis_srv else '-'}")
        else:
            stack.stop()
            if redis_srv:
                redis_srv.stop()
    return {"results": results, "setup": setup, "redis": "private" if redis_srv else redis_url, "started": started,
            "info": info, "commit": commit}


def report(args, sizes, scenarios, nofile, pg, argv, inbox, peer_doc) -> int:
    results, setup, started, info, commit = inbox["results"], inbox["setup"], inbox["started"], inbox["info"], inbox["commit"]
    finished = dt.datetime.now(dt.timezone.utc)

    table = render_table(results)
    targets = verdicts(results)
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "git": commit,
        "note": args.note,
        "label": args.label,
        "machine": info | {"loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "stack": stack_info(args, inbox["redis"], pg, nofile),
        "mode": "quick" if args.quick else "full",
        "sizes": sizes,
        "setup": setup,
        "results": results,
        "targets": targets,
        "table_markdown": table,
    }
    if peer_doc is not None:
        doc["peer"] = peer_doc
    print()
    print(f"Inbox bench {doc['started']} ({doc['mode']}), {args.workers} x {args.server}{http_topology(args)}, git {doc['git']}, "
          f"{info['cores']} cores {info['cpu']}, load avg at start {info['loadavg_start']}")
    if args.note:
        print(f"note: {args.note}")
    print(table if results else "(Inbox not run: --peer-only)")
    if peer_doc is not None:
        import peer

        print("\nSide by side with the seed's Node.js peer " + ", ".join(f"{k} {v}" for k, v in peer_doc["info"].items()) +
              " (after Inbox, same run, same load generator and sizes; ratio = Inbox / peer)")
        print(peer_doc["table_markdown"])
        print(peer.headline_text(peer_doc["headline"]))
    if not args.no_save:
        suffix = f"-{args.label}" if args.label else ""
        if args.quick:
            # Development runs: one file, overwritten; the dated history is for full runs.
            names = [f"latest-quick{suffix}.json"]
        else:
            names = [f"latest{suffix}.json", started.strftime("%Y-%m-%dT%H%M%SZ") + f"-full{suffix}.json"]
        write_results(args.output, doc, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
