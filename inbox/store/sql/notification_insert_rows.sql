-- inbox_notification_insert_rows(): several sends' writes in one statement (PostgreSQL only), the
-- rows of group commit's batches, each row carrying its own notification (store/group_commit.py;
-- a send's cost is mostly per transaction, not per row: bench/JOURNAL.md, finding 53). The one
-- definition: migrations load this file (a change here needs a new migration that loads it
-- again), and tests/inbox/store/test_sql.py compares the migrated database's function with it.
--
-- {users} and {notifications} are the quoted tables of AUTH_USER_MODEL and inbox.Notification,
-- filled in by the migration.
--
-- The same steps and guarantees as inbox_notification_insert(): the advisory locks of every row's
-- recipient (ascending buckets), every recipient an active user or nothing stored (SQLSTATE IB001,
-- the missing ids in DETAIL), ids drawn in row order, and each recipient's unread count before the
-- statement (rows not expired at p_now). It waits p_lock_timeout at most for a lock
-- (transaction-local: the call is its own transaction).
--
-- enable_seqscan = off as for the other (finding 47). plan_cache_mode = force_generic_plan: with
-- arrays as parameters the generic plan never looked cheaper than a custom one, so every call was
-- planned anew, a third of its cost for small batches; the function only writes batches of small
-- sends, so plans for large arrays are never needed (finding 56). jit = off as for the other: a
-- generic plan's estimated counts made a batch of one compile for ~90 ms (finding 72).

CREATE OR REPLACE FUNCTION inbox_notification_insert_rows(
    p_recipients bigint[], p_lock_namespace integer, p_lock_buckets integer[],
    p_senders bigint[], p_categories text[], p_titles text[], p_messages text[], p_data jsonb[],
    p_links text[], p_created_at timestamptz[], p_expires_at timestamptz[], p_now timestamptz,
    p_lock_timeout text
) RETURNS TABLE (is_new boolean, recipient bigint, value bigint)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $fn$
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
    -- The recipients' unread counters before their user rows (store/sql/unread_counter.sql says why).
    PERFORM inbox_unread_lock(p_recipients);
    WITH active AS (
        SELECT u.id FROM {users} u WHERE u.id = ANY(p_recipients) AND u.is_active FOR KEY SHARE
    )
    SELECT string_agg(DISTINCT t.r::text, ',') INTO missing
    FROM unnest(p_recipients) AS t(r) LEFT JOIN active ON active.id = t.r
    WHERE active.id IS NULL;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'inbox: recipients are not active users' USING ERRCODE = 'IB001', DETAIL = missing;
    END IF;
    RETURN QUERY
    WITH r AS (
        SELECT * FROM unnest(
            p_recipients, p_senders, p_categories, p_titles, p_messages, p_data, p_links, p_created_at, p_expires_at
        ) WITH ORDINALITY AS t(r, s, c, ti, m, d, l, ca, ea, o)
    ),
    ins AS (
        INSERT INTO {notifications} AS n (recipient_id, sender_id, category, title, message, data, link, created_at, expires_at)
        SELECT r.r, r.s, r.c, r.ti, r.m, r.d, r.l, r.ca, r.ea
        FROM r ORDER BY r.o
        RETURNING n.id, n.recipient_id
    )
    SELECT true, ins.recipient_id::bigint, ins.id FROM ins
    UNION ALL
    SELECT false, d.r, c.unread
    FROM (SELECT DISTINCT r.r FROM r) AS d,
    LATERAL (SELECT u.unread FROM inbox_unread(d.r, p_now) AS u OFFSET 0) AS c  -- OFFSET 0: counted once, not again for the WHERE
    WHERE c.unread > 0;
END
$fn$;
