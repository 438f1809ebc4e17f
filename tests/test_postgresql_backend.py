"""
The PostgreSQL backend's pool check (notifications_site/postgresql_backend): a healthy pooled
connection is handed out without a round trip; one that PostgreSQL ended is replaced, and the
caller never sees the broken one.

Real connections to the test database: a pool of one connection, and an observer that reads the
pooled backend's ``pg_stat_activity.state_change``, which moves with every statement it runs.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from django.db import connection

from notifications_site.postgresql_backend.base import DatabaseWrapper, check_connection

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL backend's connection pool"),
]


@pytest.fixture
def pooled():
    """A DatabaseWrapper of our backend with a pool of one connection; closed afterwards."""
    made = []

    def make(full_check_seconds: float) -> DatabaseWrapper:
        settings_dict = {
            **connection.settings_dict,
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                **connection.settings_dict["OPTIONS"],
                "pool": {"min_size": 1, "max_size": 1, "timeout": 5},
                "pool_full_check_seconds": full_check_seconds,
            },
        }
        wrapper = DatabaseWrapper(settings_dict, alias=f"pool-test-{uuid.uuid4().hex[:8]}")
        made.append(wrapper)
        return wrapper

    yield make
    for wrapper in made:
        wrapper.close()
        wrapper.close_pool()


@pytest.fixture
def observer():
    params = connection.get_connection_params()
    conn = psycopg.connect(
        dbname=params["dbname"], user=params.get("user"), host=params.get("host"), port=params.get("port"), autocommit=True
    )
    yield conn
    conn.close()


def _checkout_backend_pid(wrapper: DatabaseWrapper) -> int:
    wrapper.ensure_connection()
    pid = wrapper.connection.info.backend_pid
    wrapper.close()  # back to the pool
    return pid


def _state_change(observer, pid: int):
    return observer.execute("SELECT state_change FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


def _checkout_and_see_if_the_backend_was_asked(wrapper, observer, pid: int) -> bool:
    before = _state_change(observer, pid)
    time.sleep(0.01)
    wrapper.ensure_connection()
    assert wrapper.connection.info.backend_pid == pid, "the pool of one handed out another connection"
    wrapper.close()
    return _state_change(observer, pid) != before


def test_our_check_is_the_one_the_pool_runs(pooled):
    wrapper = pooled(30)
    assert wrapper.pool._check.func is check_connection
    assert wrapper.pool._check.keywords == {"full_check_every": 30}


def test_a_healthy_pooled_connection_is_handed_out_without_a_round_trip(pooled, observer):
    wrapper = pooled(30)
    pid = _checkout_backend_pid(wrapper)  # a new connection: checked with a round trip once
    assert [_checkout_and_see_if_the_backend_was_asked(wrapper, observer, pid) for _ in range(3)] == [False] * 3


def test_with_no_interval_every_checkout_asks_the_server_as_djangos_own_check_does(pooled, observer):
    wrapper = pooled(0)
    pid = _checkout_backend_pid(wrapper)
    assert [_checkout_and_see_if_the_backend_was_asked(wrapper, observer, pid) for _ in range(3)] == [True] * 3


def test_a_connection_checked_longer_ago_than_the_interval_gets_the_round_trip(pooled, observer):
    wrapper = pooled(0.2)
    pid = _checkout_backend_pid(wrapper)
    assert not _checkout_and_see_if_the_backend_was_asked(wrapper, observer, pid)
    time.sleep(0.3)
    assert _checkout_and_see_if_the_backend_was_asked(wrapper, observer, pid)


def test_a_pooled_connection_that_postgresql_ended_is_replaced_before_anyone_uses_it(pooled, observer):
    wrapper = pooled(30)
    pid = _checkout_backend_pid(wrapper)
    assert observer.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0] is True
    deadline = time.monotonic() + 5
    while observer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
        assert time.monotonic() < deadline, "the backend did not end"
        time.sleep(0.02)

    with wrapper.cursor() as cursor:  # no error: the pool threw the dead connection away
        cursor.execute("SELECT pg_backend_pid()")
        new_pid = cursor.fetchone()[0]
    wrapper.close()
    assert new_pid != pid
