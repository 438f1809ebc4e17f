"""
SQLite with fair write transactions inside one process.

Every transaction starts with ``BEGIN IMMEDIATE`` (settings: ids are allocated in commit order).
When several threads of one process want the write lock at once, SQLite's busy handler makes the
losers sleep and retry with growing pauses (up to 100 ms each), so one unlucky send could wait over
a second behind seven others that each took a few milliseconds. Here the threads of a process
queue on a lock before ``BEGIN`` instead and start the moment the writer before them commits.
Other processes (the shell, a second server) still meet SQLite's busy timeout as before.

Bulk inserts use SQLite's real bound-variable limit, not the historical 999 that Django 5.2
assumes: a 1,000-recipient send stays one INSERT instead of batches of ~90 rows.
"""

from __future__ import annotations

import sqlite3
import threading

from django.db import OperationalError
from django.db.backends.sqlite3 import base

# The one lock the write transactions of this process queue on.
write_lock = threading.Lock()


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_write_lock = False

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        # SQLite >= 3.32 allows 32,766 variables per statement; Django 5.2 assumes 999 and splits
        # bulk inserts by it. https://www.sqlite.org/limits.html#max_variable_number
        self.features.max_query_params = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return connection

    def _start_transaction_under_autocommit(self):
        timeout = self.settings_dict.get("OPTIONS", {}).get("timeout", 5)
        if not write_lock.acquire(timeout=timeout):
            raise OperationalError("database is locked (waited %ss for another writer of this process)" % timeout)
        self._holds_write_lock = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_write_lock()
            raise

    def _release_write_lock(self):
        if self._holds_write_lock:
            self._holds_write_lock = False
            write_lock.release()

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_write_lock()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_write_lock()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release_write_lock()
