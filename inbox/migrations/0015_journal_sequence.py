"""
The change journal's numbers (issue 21, docs/feed.md "The change journal"): one counter for ids and
journal steps. A new row's ``seq`` is its id, set by a trigger when the insert left it at its
default 0 (the PL/pgSQL send functions, group commit, the ORM: none of them names the column);
every later change takes the next value of the same counter (inbox/store/journal.py, ``advance``):
the id sequence on PostgreSQL (``inbox_journal_next()`` for SQL callers), SQLite's AUTOINCREMENT
counter (``sqlite_sequence``) elsewhere.
Rows that existed before get ``seq = id`` and the counter is moved past every number handed out.
"""

from django.db import migrations

PG_FORWARD = """
-- The journal's next number, for SQL that changes a row in place (store/sql/): what
-- inbox/store/journal.py's advance() draws, under the user's advisory lock.
CREATE OR REPLACE FUNCTION inbox_journal_next() RETURNS bigint LANGUAGE sql VOLATILE AS $fn$
    SELECT nextval('{seqname}'::regclass)
$fn$;
CREATE OR REPLACE FUNCTION inbox_notification_seq_is_id() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.seq := NEW.id;
    RETURN NEW;
END
$fn$;
CREATE TRIGGER inbox_notification_seq BEFORE INSERT ON {t} FOR EACH ROW WHEN (NEW.seq = 0)
    EXECUTE FUNCTION inbox_notification_seq_is_id();
UPDATE {t} SET seq = id WHERE seq = 0;
SELECT setval(pg_get_serial_sequence('{t}', 'id'), GREATEST(
    1,
    (SELECT last_value FROM {seqname}),
    (SELECT max(seq) FROM {t}),
    (SELECT max(seq) FROM {tomb}),
    (SELECT max(seq) FROM {floor})
));
"""
PG_BACKWARD = """
DROP TRIGGER IF EXISTS inbox_notification_seq ON {t};
DROP FUNCTION IF EXISTS inbox_notification_seq_is_id();
DROP FUNCTION IF EXISTS inbox_journal_next();
"""

SQLITE_FORWARD = [
    """
    CREATE TRIGGER inbox_notification_seq AFTER INSERT ON {t} FOR EACH ROW WHEN NEW.seq = 0
    BEGIN
        UPDATE {t} SET seq = NEW.id WHERE id = NEW.id;
    END
    """,
    "UPDATE {t} SET seq = id WHERE seq = 0",
    "INSERT INTO sqlite_sequence (name, seq) SELECT '{name}', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = '{name}')",
    """
    UPDATE sqlite_sequence SET seq = max(
        seq,
        coalesce((SELECT max(seq) FROM {t}), 0),
        coalesce((SELECT max(seq) FROM {tomb}), 0),
        coalesce((SELECT max(seq) FROM {floor}), 0)
    ) WHERE name = '{name}'
    """,
]
SQLITE_BACKWARD = ["DROP TRIGGER IF EXISTS inbox_notification_seq"]


def _tables(apps):
    return {
        "t": apps.get_model("inbox", "Notification")._meta.db_table,
        "tomb": apps.get_model("inbox", "Tombstone")._meta.db_table,
        "floor": apps.get_model("inbox", "JournalFloor")._meta.db_table,
    }


def forward(apps, schema_editor):
    names = _tables(apps)
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [names["t"]])
            seqname = cursor.fetchone()[0]
            cursor.execute(PG_FORWARD.format(seqname=seqname, **names))
        elif schema_editor.connection.vendor == "sqlite":
            for sql in SQLITE_FORWARD:
                cursor.execute(sql.format(name=names["t"], **names))


def backward(apps, schema_editor):
    names = _tables(apps)
    with schema_editor.connection.cursor() as cursor:
        if schema_editor.connection.vendor == "postgresql":
            cursor.execute(PG_BACKWARD.format(**names))
        elif schema_editor.connection.vendor == "sqlite":
            for sql in SQLITE_BACKWARD:
                cursor.execute(sql)


class Migration(migrations.Migration):

    dependencies = [
        ("inbox", "0014_feed_functions"),
    ]

    operations = [migrations.RunPython(forward, backward)]
