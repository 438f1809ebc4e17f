#!/usr/bin/env python
"""
How long one server process takes to exit on SIGTERM while it holds N idle authenticated sockets.

    python bench/stop.py --sockets 10000 [--loadgen-processes 2] [--py-spy record|dump]

One uvicorn process started as the image starts each of its servers (scripts/serve.py's DEFAULT_SERVER,
no access log), a private redis-server, PostgreSQL at --database-url (created and migrated if missing;
bench users and minted tokens, as bench/scale.py). Once every socket has its ``sync.done``: SIGTERM, then
the time to the process' exit and to the last socket closed, the close codes and reasons the clients
got, and the group memberships the sockets left behind in Redis. ``--py-spy record`` profiles the server during the stop (a flame graph in the work directory);
``--py-spy dump`` dumps its stack once a second during it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from loadgen import Pool, run_async  # noqa: E402
from run import django_setup, ensure_database, ensure_users, mint_tokens, raise_nofile  # noqa: E402
from stack import PrivateRedis, free_port, make_workdir, wait_for_port  # noqa: E402


def loadgen(conn, user_ids, tokens, port: int, source_hosts: int) -> None:
    """Open every socket of ``user_ids``; after "stop", wait for each to close and answer what it was told."""

    async def main():
        pool = Pool([port], user_ids, tokens, source_hosts=source_hosts)
        stats = await pool.ensure(len(user_ids), None, concurrency=16)
        conn.send(("open", stats.count, stats.failed, dict(list(stats.errors.items())[:3])))
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        loop.add_reader(conn.fileno(), wake.set)
        await wake.wait()
        conn.recv()
        closed_at: list[float] = []

        async def closed(sock):
            await sock.ws.wait_closed()
            closed_at.append(time.time())

        await asyncio.wait_for(asyncio.gather(*(closed(s) for s in pool.socks.values())), 120)
        codes = Counter(f"{s.ws.close_code} {s.ws.close_reason!r}" for s in pool.socks.values())
        conn.send(("closed", dict(codes), max(closed_at, default=None)))

    run_async(main())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sockets", type=int, default=10_000)
    p.add_argument("--loadgen-processes", type=int, default=2)
    p.add_argument("--source-hosts", type=int, default=1, help="127.0.0.x source addresses (one holds ~28,000 sockets)")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/inbox_stop"))
    p.add_argument("--settings", default="notifications_site.settings")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--py-spy", choices=["record", "dump"], help="profile the server during the stop")
    args = p.parse_args(argv)
    raise_nofile()

    from django.core.management import call_command

    secret_key = "bench-" + secrets.token_urlsafe(40)
    ensure_database(args.database_url)
    django_setup(args, secret_key)
    call_command("migrate", verbosity=0)
    users, _ = ensure_users(args.sockets)
    tokens = mint_tokens(users)
    from django.db import connection

    connection.close()

    workdir = make_workdir()
    redis = PrivateRedis(workdir).start()
    sys.path.insert(0, str(ROOT / "scripts"))
    from serve import DEFAULT_SERVER

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({
        "DJANGO_SETTINGS_MODULE": args.settings, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": secret_key,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost", "DATABASE_URL": args.database_url, "REDIS_URL": redis.url,
        "REDIS_MAX_CONNECTIONS": "20000", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
    })
    env.update(item.partition("=")[::2] for item in args.server_env)
    log_path = workdir / "uvicorn.log"
    command = [*DEFAULT_SERVER, "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "notifications_site.asgi:application"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    procs, conns, spy = [], [], None
    try:
        wait_for_port(port, 60, server, log_path)
        ids, n = [u.id for u in users], args.loadgen_processes
        t0 = time.perf_counter()
        for c in range(n):
            parent, child = mp.Pipe()
            proc = mp.Process(target=loadgen, args=(child, ids[c::n], tokens[c::n], port, args.source_hosts), daemon=True)
            proc.start()
            procs.append(proc)
            conns.append(parent)
        opened = [conn.recv() for conn in conns]
        count = sum(o[1] for o in opened)
        print(f"{count:,} sockets open in {time.perf_counter() - t0:.1f} s (failed: {sum(o[2] for o in opened)}"
              f" {[o[3] for o in opened if o[3]]})", flush=True)
        time.sleep(2)  # the connects' tails settle
        if args.py_spy == "record":
            svg = workdir / "stop.svg"
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(server.pid), "-r", "50",
                                    "-o", str(svg), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            time.sleep(1)
        for conn in conns:
            conn.send("stop")
        sigterm = time.time()
        server.send_signal(signal.SIGTERM)
        if args.py_spy == "dump":
            while server.poll() is None:
                out = subprocess.run([str(Path(sys.executable).parent / "py-spy"), "dump", "-p", str(server.pid), "--nonblocking"],
                                     capture_output=True, text=True)
                print(f"--- {time.time() - sigterm:.1f} s after SIGTERM\n{out.stdout[-3000:]}", flush=True)
                time.sleep(1)
        try:
            status = server.wait(60)
        except subprocess.TimeoutExpired:
            status = "still running after 60 s"
        exited = time.time()
        closed = [conn.recv() for conn in conns]
        codes = Counter()
        for c in closed:
            codes.update(c[1])
        last_closed = max((c[2] for c in closed if c[2]), default=None)
        print(f"SIGTERM -> exit: {exited - sigterm:.2f} s (status {status}); SIGTERM -> last socket closed: "
              f"{(last_closed - sigterm) if last_closed else float('nan'):.2f} s; closes: {dict(codes)}", flush=True)
        import redis as redis_client

        r = redis_client.Redis.from_url(redis.url)
        left = sum(r.zcard(key) for key in r.scan_iter(match="*group*", count=1000))
        r.close()
        print(f"group memberships left in Redis after the exit: {left:,} (of {count:,} sockets)", flush=True)
        if spy is not None:
            spy.wait(30)
            print(f"py-spy: {svg}", flush=True)
        print(f"server log: {log_path}", flush=True)
    finally:
        if server.poll() is None:
            server.kill()
        for proc in procs:
            proc.kill()
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
