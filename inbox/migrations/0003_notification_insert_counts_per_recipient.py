"""
PostgreSQL only: ``inbox_notification_insert()`` counts each recipient's unread rows through the
recipient's index, whatever the table's statistics say.

0002 counted them with one join of the recipients against every unread row. PL/pgSQL caches a
generic plan for that statement, and when the statistics were taken on an empty or much smaller
table (a new deployment, a bench run's fresh database) that plan scanned every unread row of every
user, for every send: 2.4 ms of PostgreSQL CPU per single-recipient send at 10,000 rows, growing
with the table, until autovacuum analyzed it again (bench/README.md, finding 33). Counting per
recipient with ``recipient_id = d.r`` leaves the planner no such choice: an index scan on the
recipient's unread rows (``inbox_unread``) is the cheap plan at every table size.

Everything else is 0002's function unchanged (its docstring says what it does and why).
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
    SELECT false, d.r, c.unread
    FROM (SELECT DISTINCT r.r FROM r) AS d,
    LATERAL (
        SELECT count(*) AS unread FROM {table} n
        WHERE n.recipient_id = d.r AND n.read_at IS NULL
          AND (n.expires_at IS NULL OR n.expires_at > p_created_at)
    ) AS c
    WHERE c.unread > 0;
END
$fn$
"""

#: The SQLSTATE the function raises when a recipient is not an active user (as in 0002).
INACTIVE_RECIPIENTS_SQLSTATE = "IB001"


def replace_function(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    users = apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table
    table = apps.get_model("inbox", "Notification")._meta.db_table
    schema_editor.execute(FUNCTION.format(users=quote(users), table=quote(table), errcode=INACTIVE_RECIPIENTS_SQLSTATE))


class Migration(migrations.Migration):
    dependencies = [("inbox", "0002_notification_insert_function")]

    # Backwards, this function stays: it answers as 0002's does (0002's own reverse drops it).
    operations = [migrations.RunPython(replace_function, migrations.RunPython.noop, elidable=False)]
