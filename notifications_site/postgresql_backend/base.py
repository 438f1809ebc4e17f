"""
PostgreSQL whose connection pool checks a connection it hands out without a round trip, unless
something says the connection broke.

With ``CONN_HEALTH_CHECKS``, Django gives the pool psycopg's ``ConnectionPool.check_connection``:
an empty query, a round trip to PostgreSQL, on every checkout, that is on every request that
touches the database (bench/ profile of directed sends: 3 % of the servers' samples, plus the
round trip and PostgreSQL's share; bench/README.md, finding 34).

A connection that broke while it sat in the pool almost always says so on its socket: when
PostgreSQL restarts, crashes, or ends a backend (pg_terminate_backend, idle_session_timeout), the
server sends an error and closes the connection, or the kernel closes it; either way the socket
becomes readable while no query is running. ``check_connection`` looks at the socket without
waiting (poll, not select: a server process holds thousands of sockets, beyond select's 1,024
descriptors) and runs the round trip only when something is there, when the connection is not
idle, or when it has not been checked for ``full_check_every`` seconds
(``OPTIONS["pool_full_check_seconds"]``, settings: ``DATABASE_POOL_FULL_CHECK_SECONDS``; 0 makes
every checkout a round trip, as stock). A connection that fails is thrown away by the pool, which
hands out another, as before.

Django builds the pool itself and passes psycopg's check when ``CONN_HEALTH_CHECKS`` is on; it has
no option for another check, so ``DatabaseWrapper.pool`` puts this one in its place
(tests/test_postgresql_backend.py shows it is the one in use).
"""

from __future__ import annotations

import select
import time
from functools import partial

from django.db.backends.postgresql import base
from psycopg import pq
from psycopg_pool import ConnectionPool

#: Seconds after which a connection gets the round trip anyway, whatever its socket says.
FULL_CHECK_EVERY_SECONDS = 30.0


def _has_input(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def check_connection(conn, *, full_check_every: float = FULL_CHECK_EVERY_SECONDS) -> None:
    """Return quietly if the connection looks usable; raise (psycopg.Error) if it is not."""
    now = time.monotonic()
    pgconn = conn.pgconn
    try:
        quiet = (
            now - getattr(conn, "_inbox_checked_at", float("-inf")) < full_check_every
            and pgconn.status == pq.ConnStatus.OK
            and pgconn.transaction_status == pq.TransactionStatus.IDLE
            and not _has_input(pgconn.socket)
        )
    except Exception:  # a closed pgconn has no socket: let the round trip say what is wrong
        quiet = False
    if quiet:
        return
    ConnectionPool.check_connection(conn)
    conn._inbox_checked_at = now


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):
        params = super().get_connection_params()
        params.pop("pool_full_check_seconds", None)  # ours, not libpq's
        return params

    @property
    def pool(self):
        pool = super().pool
        if pool is not None and getattr(pool, "_check", None) is ConnectionPool.check_connection:
            every = self.settings_dict["OPTIONS"].get("pool_full_check_seconds", FULL_CHECK_EVERY_SECONDS)
            pool._check = partial(check_connection, full_check_every=every)
        return pool
