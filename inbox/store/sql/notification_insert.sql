-- inbox_notification_insert(): a send's whole write in one statement (PostgreSQL only; the store's
-- SQLite path needs no function). The one definition: migrations load this file (a change here
-- needs a new migration that loads it again), and tests/inbox/store/test_sql.py compares the
-- migrated database's function with it.
--
-- {users} and {notifications} are the quoted tables of AUTH_USER_MODEL and inbox.Notification,
-- filled in by the migration. SQLSTATE IB001 (store/postgres.py, INACTIVE_RECIPIENTS_SQLSTATE):
-- a recipient is not an active user; DETAIL lists their ids.
--
-- Called outside a transaction it is one statement that is its own transaction: it takes the
-- recipients' advisory locks (ascending buckets, store/postgres.py says why they matter), checks
-- the recipients, inserts, counts, and commits with the locks held. Inside a caller's transaction
-- the locks last until that transaction ends. PL/pgSQL is VOLATILE: each statement takes a new
-- snapshot (READ COMMITTED), so the insert and the counts see every row committed before the locks
-- were granted.
--
-- Each recipient's unread count is inbox_unread() (store/sql/unread_counter.sql: the counter the
-- table's triggers keep, plus the unread rows that expire later), one recipient at a time: a join
-- against every unread row was the cached plan on stale statistics (bench/JOURNAL.md, finding 33).
-- enable_seqscan = off keeps a plan made on a nearly empty table from scanning the whole table
-- once it has grown (finding 47). Plans are chosen per call: bulk sends were slower on generic
-- plans (finding 56). jit = off: before the counter, the count's estimate was the table's unread
-- rows over the few recipient_id values ANALYZE samples (1.8M rows a recipient beside a 10M-row
-- inbox), so the plan's cost passed jit_above_cost and the inline/optimize thresholds from a few
-- recipients on, and each call spent 90-130 ms compiling for a 2 ms run (finding 72); no plan of
-- this function needs JIT.

CREATE OR REPLACE FUNCTION inbox_notification_insert(
    p_recipients bigint[], p_lock_namespace integer, p_lock_buckets integer[],
    p_sender bigint, p_category text, p_title text, p_message text, p_data jsonb, p_link text,
    p_created_at timestamptz, p_expires_at timestamptz
) RETURNS TABLE (is_new boolean, recipient bigint, value bigint)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET jit = off
AS $fn$
DECLARE
    bucket integer;
    missing text;
BEGIN
    -- Ascending bucket order (the caller sorts): two bulk sends cannot deadlock.
    FOREACH bucket IN ARRAY p_lock_buckets LOOP
        PERFORM pg_advisory_xact_lock(p_lock_namespace, bucket);
    END LOOP;
    -- The recipients' unread counters before their user rows (store/sql/unread_counter.sql says why).
    PERFORM inbox_unread_lock(p_recipients);
    -- Every recipient must be an active user, or nothing is stored. FOR KEY SHARE (what the
    -- foreign key check takes anyway) keeps them from being deleted before this commits.
    WITH active AS (
        SELECT u.id FROM {users} u WHERE u.id = ANY(p_recipients) AND u.is_active FOR KEY SHARE
    )
    SELECT string_agg(t.r::text, ',') INTO missing
    FROM unnest(p_recipients) AS t(r) LEFT JOIN active ON active.id = t.r
    WHERE active.id IS NULL;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'inbox: recipients are not active users' USING ERRCODE = 'IB001', DETAIL = missing;
    END IF;
    -- The new ids (drawn in recipients order) and the recipients' unread counts before them.
    RETURN QUERY
    WITH r AS (SELECT t.r, t.o FROM unnest(p_recipients) WITH ORDINALITY AS t(r, o)),
    ins AS (
        INSERT INTO {notifications} AS n (recipient_id, sender_id, category, title, message, data, link, created_at, expires_at)
        SELECT r.r, p_sender, p_category, p_title, p_message, p_data, p_link, p_created_at, p_expires_at
        FROM r ORDER BY r.o
        RETURNING n.id, n.recipient_id
    )
    SELECT true, ins.recipient_id::bigint, ins.id FROM ins
    UNION ALL
    SELECT false, d.r, c.unread
    FROM (SELECT DISTINCT r.r FROM r) AS d,
    LATERAL (SELECT u.unread FROM inbox_unread(d.r, p_created_at) AS u OFFSET 0) AS c  -- OFFSET 0: counted once, not again for the WHERE
    WHERE c.unread > 0;
END
$fn$;
