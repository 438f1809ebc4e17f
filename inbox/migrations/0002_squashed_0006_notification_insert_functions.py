"""
PostgreSQL only: the two functions a send is written with, ``inbox_notification_insert()`` (a send
alone) and ``inbox_notification_insert_rows()`` (group commit's batches), created from their one
source, inbox/store/sql/, which says what each does and why. SQLite has no such functions and needs
none (inbox/store/sqlite.py).

This replaces 0002-0006, which built the same functions step by step: a database that applied
those already has them and sees this migration as applied. A later change to a function edits its
file and adds a migration that loads it again (``CREATE OR REPLACE``; a new argument list also
drops the old signature), so a fresh database and an upgraded one end with the same definition:
tests/inbox/store/test_sql.py compares the migrated database with the files. PL/pgSQL checks a
body's tables and columns when it runs, not when it is created, so loading today's source here,
before later schema migrations, is safe. Today's send functions call ``inbox_unread()`` and
``inbox_unread_lock()``, which migration 0018 defines with the unread counter: this one creates them
first as they are without it (inbox/store/sql/unread_plain.sql), so that a database at any migration
from here on can send.
"""

from pathlib import Path

from django.conf import settings
from django.db import migrations

SQL = Path(__file__).resolve().parent.parent / "store" / "sql"
FILES = ("notification_insert.sql", "notification_insert_rows.sql")

DROP = (
    "DROP FUNCTION IF EXISTS inbox_notification_insert_rows(bigint[], integer, integer[], bigint[], text[], text[], "
    "text[], jsonb[], text[], timestamptz[], timestamptz[], timestamptz, text)",
    "DROP FUNCTION IF EXISTS inbox_notification_insert(bigint[], integer, integer[], bigint, text, text, text, jsonb, "
    "text, timestamptz, timestamptz)",
)


#: The unread count's two functions as they are without the counter (migration 0018 replaces them).
UNREAD_PLAIN = "unread_plain.sql"
DROP_UNREAD_PLAIN = "DROP FUNCTION IF EXISTS inbox_unread, inbox_unread_lock"


def create_functions(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    create_unread_plain(apps, schema_editor)
    load_send_functions(apps, schema_editor)


def load_send_functions(apps, schema_editor):
    """Both send functions from today's source (they call inbox_unread() and inbox_unread_lock())."""
    quote = schema_editor.quote_name
    tables = {
        "users": quote(apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table),
        "notifications": quote(apps.get_model("inbox", "Notification")._meta.db_table),
    }
    for name in FILES:
        # params=None: the file's text goes as it is, without placeholders (a "%" in a comment).
        schema_editor.execute((SQL / name).read_text().format(**tables), params=None)


def create_unread_plain(apps, schema_editor):
    """inbox_unread() as a count of the rows and inbox_unread_lock() with nothing to lock (store/sql/unread_plain.sql)."""
    from inbox.store.unread import argument_type

    notification = apps.get_model("inbox", "Notification")
    names = {
        "notifications": schema_editor.quote_name(notification._meta.db_table),
        "user_argument": argument_type(notification._meta.get_field("recipient").db_type(schema_editor.connection)),
    }
    schema_editor.execute((SQL / UNREAD_PLAIN).read_text().format(**names), params=None)


def drop_functions(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in DROP:
        schema_editor.execute(statement)
    schema_editor.execute(DROP_UNREAD_PLAIN)


class Migration(migrations.Migration):
    replaces = [
        ("inbox", "0002_notification_insert_function"),
        ("inbox", "0003_notification_insert_counts_per_recipient"),
        ("inbox", "0004_notification_insert_without_sequential_scans"),
        ("inbox", "0005_notification_insert_rows_function"),
        ("inbox", "0006_notification_insert_rows_generic_plans"),
    ]

    dependencies = [
        ("inbox", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(create_functions, drop_functions, elidable=False)]
