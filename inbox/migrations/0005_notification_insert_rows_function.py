"""
PostgreSQL only: ``inbox_notification_insert_rows()``, several sends' writes in one statement.

``inbox_notification_insert()`` (0002-0004) stores one notification for many recipients. This one
stores rows that each carry their own notification: the small sends that arrived together in one
server process, written and committed as one (services.notification_create, "group commit").
A send's cost in PostgreSQL is mostly per transaction, not per row (bench/README.md, finding 53).

Same steps and guarantees as ``inbox_notification_insert()``: the advisory locks of every row's
recipient (ascending buckets), every recipient an active user or nothing stored (SQLSTATE IB001,
the missing ids in DETAIL), ids drawn in row order, and each recipient's unread count before the
statement (rows not expired at ``p_now``). Planned without sequential scans, as 0004 did for the other.
It waits ``p_lock_timeout`` at most for a lock (transaction-local: the call is its own transaction).
"""

from django.conf import settings
from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION inbox_notification_insert_rows(
    p_recipients bigint[], p_lock_namespace integer, p_lock_buckets integer[],
    p_senders bigint[], p_categories text[], p_titles text[], p_messages text[], p_data jsonb[],
    p_links text[], p_created_at timestamptz[], p_expires_at timestamptz[], p_now timestamptz,
    p_lock_timeout text
) RETURNS TABLE (is_new boolean, recipient bigint, value bigint)
LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $fn$
DECLARE
    bucket integer;
    missing text;
BEGIN
    -- A batch waits this long at most for a lock held elsewhere (then 55P03, nothing stored, and
    -- its sends are written alone): one busy recipient does not hold the others of the batch.
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    FOREACH bucket IN ARRAY p_lock_buckets LOOP
        PERFORM pg_advisory_xact_lock(p_lock_namespace, bucket);
    END LOOP;
    WITH active AS (
        SELECT u.id FROM {users} u WHERE u.id = ANY(p_recipients) AND u.is_active FOR KEY SHARE
    )
    SELECT string_agg(DISTINCT t.r::text, ',') INTO missing
    FROM unnest(p_recipients) AS t(r) LEFT JOIN active ON active.id = t.r
    WHERE active.id IS NULL;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'inbox: recipients are not active users' USING ERRCODE = '{errcode}', DETAIL = missing;
    END IF;
    RETURN QUERY
    WITH r AS (
        SELECT * FROM unnest(
            p_recipients, p_senders, p_categories, p_titles, p_messages, p_data, p_links, p_created_at, p_expires_at
        ) WITH ORDINALITY AS t(r, s, c, ti, m, d, l, ca, ea, o)
    ),
    ins AS (
        INSERT INTO {table} AS n (recipient_id, sender_id, category, title, message, data, link, created_at, expires_at)
        SELECT r.r, r.s, r.c, r.ti, r.m, r.d, r.l, r.ca, r.ea
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
          AND (n.expires_at IS NULL OR n.expires_at > p_now)
    ) AS c
    WHERE c.unread > 0;
END
$fn$
"""

SIGNATURE = (
    "inbox_notification_insert_rows(bigint[], integer, integer[], bigint[], text[], text[], text[], jsonb[], "
    "text[], timestamptz[], timestamptz[], timestamptz, text)"
)

#: The SQLSTATE the function raises when a recipient is not an active user (as in 0002).
INACTIVE_RECIPIENTS_SQLSTATE = "IB001"


def create_function(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    users = apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table
    table = apps.get_model("inbox", "Notification")._meta.db_table
    schema_editor.execute(FUNCTION.format(users=quote(users), table=quote(table), errcode=INACTIVE_RECIPIENTS_SQLSTATE))


def drop_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")


class Migration(migrations.Migration):
    dependencies = [("inbox", "0004_notification_insert_without_sequential_scans")]

    operations = [migrations.RunPython(create_function, drop_function, elidable=False)]
