"""
PostgreSQL only: ``inbox_notification_insert()``, a send's whole write in one statement.

A send was four statements, each a round trip: BEGIN, the recipients' advisory locks, the
INSERT ... RETURNING with the unread counts, COMMIT. Called outside a transaction, this function is
one statement that is its own transaction: it takes the locks, checks the recipients, inserts and
counts, and commits with them held (inbox/services.py says why the locks matter). Inside a
caller's transaction it does the same and the locks last until that transaction ends.

A PL/pgSQL function is VOLATILE: each statement in it takes a new snapshot (READ COMMITTED), so
the insert and the counts see every row committed before the locks were granted.
SQLite has no such function and needs none (services.notification_create).
"""

from django.conf import settings
from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION inbox_notification_insert(
    p_recipients bigint[], p_lock_namespace integer, p_lock_buckets integer[],
    p_sender bigint, p_category text, p_title text, p_message text, p_data jsonb, p_link text,
    p_created_at timestamptz, p_expires_at timestamptz
) RETURNS TABLE (is_new boolean, recipient bigint, value bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    bucket integer;
    missing text;
BEGIN
    -- Ascending bucket order (the caller sorts): two bulk sends cannot deadlock.
    FOREACH bucket IN ARRAY p_lock_buckets LOOP
        PERFORM pg_advisory_xact_lock(p_lock_namespace, bucket);
    END LOOP;
    -- Every recipient must be an active user, or nothing is stored. FOR KEY SHARE (what the
    -- foreign key check takes anyway) keeps them from being deleted before this commits.
    WITH active AS (
        SELECT u.id FROM {users} u WHERE u.id = ANY(p_recipients) AND u.is_active FOR KEY SHARE
    )
    SELECT string_agg(t.r::text, ',') INTO missing
    FROM unnest(p_recipients) AS t(r) LEFT JOIN active ON active.id = t.r
    WHERE active.id IS NULL;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'inbox: recipients are not active users' USING ERRCODE = '{errcode}', DETAIL = missing;
    END IF;
    -- The new ids (drawn in recipients order) and the recipients' unread counts before them.
    RETURN QUERY
    WITH r AS (SELECT t.r, t.o FROM unnest(p_recipients) WITH ORDINALITY AS t(r, o)),
    ins AS (
        INSERT INTO {table} AS n (recipient_id, sender_id, category, title, message, data, link, created_at, expires_at)
        SELECT r.r, p_sender, p_category, p_title, p_message, p_data, p_link, p_created_at, p_expires_at
        FROM r ORDER BY r.o
        RETURNING n.id, n.recipient_id
    )
    SELECT true, ins.recipient_id::bigint, ins.id FROM ins
    UNION ALL
    SELECT false, n.recipient_id::bigint, count(*) FROM {table} n
    WHERE n.recipient_id IN (SELECT r.r FROM r) AND n.read_at IS NULL
      AND (n.expires_at IS NULL OR n.expires_at > p_created_at)
    GROUP BY n.recipient_id;
END
$fn$
"""

DROP = (
    "DROP FUNCTION IF EXISTS inbox_notification_insert("
    "bigint[], integer, integer[], bigint, text, text, text, jsonb, text, timestamptz, timestamptz)"
)

#: The SQLSTATE the function raises when a recipient is not an active user (DETAIL: their ids).
INACTIVE_RECIPIENTS_SQLSTATE = "IB001"


def create_function(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    users = apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table
    table = apps.get_model("inbox", "Notification")._meta.db_table
    schema_editor.execute(
        FUNCTION.format(users=quote(users), table=quote(table), errcode=INACTIVE_RECIPIENTS_SQLSTATE)
    )


def drop_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [
        ("inbox", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(create_function, drop_function, elidable=False)]
