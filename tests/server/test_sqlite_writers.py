"""The SQLite backend queues the write transactions of one process instead of letting them spin on the busy handler."""

import threading

import pytest
from django.db import connection, connections, transaction

from inbox import services
from inbox.models import Notification
from server.db.sqlite import base as sqlite_backend

pytestmark = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the SQLite backend only; PostgreSQL orders writers with advisory locks"
)


def test_concurrent_sends_from_many_threads_all_commit_and_leave_the_write_lock_free(transactional_db, make_user):
    alice = make_user("alice")
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            for j in range(10):
                services.notification_create(recipients=[alice], title=f"t{i}-{j}")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    assert Notification.objects.filter(recipient=alice).count() == 80
    assert not sqlite_backend.write_lock.locked()


def test_a_rolled_back_transaction_releases_the_write_lock(transactional_db, make_user):
    alice = make_user("alice")
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            services.notification_create(recipients=[alice], title="rolled back")
            assert sqlite_backend.write_lock.locked()
            raise RuntimeError("boom")
    assert not sqlite_backend.write_lock.locked()
    assert not Notification.objects.exists()


def test_closing_a_connection_inside_a_transaction_releases_the_write_lock(transactional_db):
    transaction.set_autocommit(False)
    try:
        connection._start_transaction_under_autocommit()
        assert sqlite_backend.write_lock.locked()
        connection.close()
        assert not sqlite_backend.write_lock.locked()
    finally:
        connection.connect()


def test_a_writer_that_waits_too_long_gets_database_is_locked_not_a_hang(transactional_db):
    from django.db import OperationalError

    sqlite_backend.write_lock.acquire()
    try:
        options = connection.settings_dict.setdefault("OPTIONS", {})
        saved = options.get("timeout")
        options["timeout"] = 0.2
        try:
            with pytest.raises(OperationalError, match="database is locked"):
                with transaction.atomic():
                    pass
        finally:
            options["timeout"] = saved
    finally:
        sqlite_backend.write_lock.release()
    with transaction.atomic():  # and the connection is usable afterwards
        assert Notification.objects.count() == 0


def test_bulk_inserts_use_sqlites_real_variable_limit_not_djangos_999(db):
    import sqlite3

    connection.ensure_connection()
    limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    assert connection.features.max_query_params == limit
    assert limit > 999  # SQLite >= 3.32: a 1,000-recipient send is one INSERT
