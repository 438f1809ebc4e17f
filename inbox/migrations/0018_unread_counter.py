"""
Each user's unread count kept beside the rows, so that a send, a connect and a read no longer count
a user's unread rows (about 70 us per 1,000 of them: 218.7 ms a send beside 3.3 million unread;
bench/JOURNAL.md, findings 51 and 76).

- Both databases: the partial index ``inbox_unread_expiring`` of the unread rows that expire.
- PostgreSQL only: the counter table, its triggers, ``inbox_unread_recount()``, ``inbox_unread_lock()``
  and ``inbox_unread()`` from inbox/store/sql/unread_counter.sql (which says how), the counters
  counted from the rows in this migration's transaction, and both send functions loaded again: they
  now lock their recipients' counters and count through ``inbox_unread()``. Writes to the
  notifications wait while it runs: the index and the count read the whole table (2.2-8.8 s for
  11 million rows on the bench's 2-core machine, finding 76). Going back drops them and gives
  ``inbox_unread()`` and ``inbox_unread_lock()`` the definitions 0002 creates (a count of the rows,
  nothing to lock), which the send functions then call.

SQLite keeps counting the rows (inbox/store/unread.py).
"""

from importlib import import_module
from pathlib import Path

from django.conf import settings
from django.db import migrations, models

from inbox.store import unread

functions = import_module("inbox.migrations.0002_squashed_0006_notification_insert_functions")
SQL = Path(__file__).resolve().parent.parent / "store" / "sql" / "unread_counter.sql"
#: The counter table's name, written as it is in the SQL (the send functions lock its rows).
COUNTERS = "inbox_unread_counter"


def _names(apps, schema_editor) -> dict[str, str]:
    from inbox.store.postgres import LOCK_BUCKETS, LOCK_NAMESPACE

    notification = apps.get_model("inbox", "Notification")
    column_type = notification._meta.get_field("recipient").db_type(schema_editor.connection)
    return {
        "notifications": schema_editor.quote_name(notification._meta.db_table),
        # The recipient column's type (integer for Django's own user, bigint, uuid, varchar(n)...).
        "user_type": column_type,
        "user_argument": unread.argument_type(column_type),
        # The writers' advisory locks, which inbox_unread_recount() takes first.
        "lock_namespace": str(LOCK_NAMESPACE),
        "lock_buckets": str(LOCK_BUCKETS),
    }


def create_counter(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # params=None: the file's text goes as it is (a "%" in a comment).
    schema_editor.execute(SQL.read_text().format(**_names(apps, schema_editor)), params=None)
    functions.load_send_functions(apps, schema_editor)


def drop_counter(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    notifications = _names(apps, schema_editor)["notifications"]
    for trigger in ("insert", "update", "delete", "truncate"):
        schema_editor.execute(f"DROP TRIGGER inbox_unread_counter_{trigger} ON {notifications}")
    schema_editor.execute("DROP FUNCTION inbox_unread_counter_follow()")
    schema_editor.execute("DROP FUNCTION inbox_unread_recount()")
    # The send functions call these two: as they were before the counter (store/sql/unread_plain.sql).
    functions.create_unread_plain(apps, schema_editor)
    schema_editor.execute(f"DROP TABLE {COUNTERS}")


class Migration(migrations.Migration):

    dependencies = [
        ("inbox", "0017_notification_insert_functions_without_jit"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(("expires_at__isnull", False), ("read_at__isnull", True)),
                fields=["recipient", "expires_at"],
                name="inbox_unread_expiring",
            ),
        ),
        migrations.RunPython(create_counter, drop_counter, elidable=False),
    ]
