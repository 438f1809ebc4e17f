-- Each user's unread count, kept beside the rows (PostgreSQL only; SQLite counts the rows). The one
-- definition: migration 0018 loads this file; tests/inbox/store/test_unread.py checks the counter
-- against a count of the rows after every kind of write.
--
-- {notifications} is the quoted table of inbox.Notification, {user_type} the type of its recipient
-- column (integer, bigint, uuid, varchar(n)...) and {user_argument} the same, or bigint for any
-- integer (store/unread.py, argument_type), filled in by the migration. The counter table's name is
-- written out: the send functions lock its rows (store/sql/notification_insert*.sql).
--
-- Counting a user's unread rows costs about 70 us per 1,000 of them, on every send (the unread
-- count of its frame), every connect and every read (bench/JOURNAL.md, findings 51 and 76): 218.7 ms
-- a send beside 3.3 million unread. Rows expire without a write, so the counter holds only the
-- unread rows that never expire (expires_at IS NULL), and inbox_unread() adds the unread rows with
-- an expiry still ahead, counted through the partial index inbox_unread_expiring (only unread rows
-- that expire: usually none or a few).
--
-- The counter follows every statement on the table, through statement triggers with transition
-- tables: one upsert per statement, whatever its rows (a read of 3 million rows is one UPDATE of
-- the counter, not 3 million). They run in the writer's transaction, so the count commits or rolls
-- back with the rows. The upsert adds under the counter row's lock, so concurrent writers never
-- lose each other's increments, and takes the rows in user order within its statement. Across the
-- statements of a transaction, order comes from the users' advisory locks (inbox/store/journal.py,
-- ``hold``): every writer of a user's rows takes them before its row and counter locks, a user's
-- deletion included (inbox/signals.py), so two writers of one user never hold each other's locks. A write with triggers disabled
-- (session_replication_role = replica, ALTER TABLE ... DISABLE TRIGGER) leaves the counter behind:
-- the recount of migration 0018 (inbox_unread_recount()) sets it right again.

CREATE TABLE inbox_unread_counter (
    user_id {user_type} PRIMARY KEY,
    unread bigint NOT NULL
) WITH (fillfactor = 50);

CREATE FUNCTION inbox_unread_counter_follow() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET jit = off
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO inbox_unread_counter AS c (user_id, unread)
        SELECT n.recipient_id, count(*) FROM inbox_new n
        WHERE n.read_at IS NULL AND n.expires_at IS NULL
        GROUP BY n.recipient_id ORDER BY n.recipient_id
        ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + EXCLUDED.unread;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO inbox_unread_counter AS c (user_id, unread)
        SELECT d.u, sum(d.x) FROM (
            SELECT o.recipient_id AS u, -1 AS x FROM inbox_old o WHERE o.read_at IS NULL AND o.expires_at IS NULL
            UNION ALL
            SELECT n.recipient_id, 1 FROM inbox_new n WHERE n.read_at IS NULL AND n.expires_at IS NULL
        ) AS d
        GROUP BY d.u HAVING sum(d.x) <> 0 ORDER BY d.u
        ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + EXCLUDED.unread;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO inbox_unread_counter AS c (user_id, unread)
        SELECT o.recipient_id, -count(*) FROM inbox_old o
        WHERE o.read_at IS NULL AND o.expires_at IS NULL
        GROUP BY o.recipient_id ORDER BY o.recipient_id
        ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + EXCLUDED.unread;
    ELSE  -- TRUNCATE: no rows, so nothing unread
        DELETE FROM inbox_unread_counter;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER inbox_unread_counter_insert AFTER INSERT ON {notifications}
    REFERENCING NEW TABLE AS inbox_new FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_counter_follow();
CREATE TRIGGER inbox_unread_counter_update AFTER UPDATE ON {notifications}
    REFERENCING OLD TABLE AS inbox_old NEW TABLE AS inbox_new FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_counter_follow();
CREATE TRIGGER inbox_unread_counter_delete AFTER DELETE ON {notifications}
    REFERENCING OLD TABLE AS inbox_old FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_counter_follow();
CREATE TRIGGER inbox_unread_counter_truncate AFTER TRUNCATE ON {notifications}
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_counter_follow();

-- The counters from the rows, for every user at once, in the migration's transaction: CREATE
-- TRIGGER above holds a lock that keeps writers out until it commits, so no write is counted twice
-- or missed (and it waits for no writer's lock: a send in flight waits for it, not the other way).
INSERT INTO inbox_unread_counter (user_id, unread)
SELECT n.recipient_id, count(*) FROM {notifications} n
WHERE n.read_at IS NULL AND n.expires_at IS NULL
GROUP BY n.recipient_id;

-- The same again, for an operator, after writes made with the triggers disabled: SELECT
-- inbox_unread_recount(). It takes every bucket of the writers' advisory locks first
-- ({lock_buckets} in namespace {lock_namespace}, store/postgres.py), as every writer of the rows
-- takes its recipients' before their rows and counters, so it waits for the writers in flight
-- instead of deadlocking with them; then it holds the table against writes while it counts.
CREATE FUNCTION inbox_unread_recount() RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    bucket integer;
    users bigint;
BEGIN
    FOR bucket IN 0..{lock_buckets} - 1 LOOP
        PERFORM pg_advisory_xact_lock({lock_namespace}, bucket);
    END LOOP;
    LOCK TABLE {notifications} IN SHARE MODE;
    DELETE FROM inbox_unread_counter;
    INSERT INTO inbox_unread_counter (user_id, unread)
    SELECT n.recipient_id, count(*) FROM {notifications} n
    WHERE n.read_at IS NULL AND n.expires_at IS NULL
    GROUP BY n.recipient_id;
    GET DIAGNOSTICS users = ROW_COUNT;
    RETURN users;
END
$fn$;

-- A send locks its recipients' counter rows, in user order, before it takes their user rows FOR KEY
-- SHARE (store/sql/notification_insert*.sql): deleting a user deletes their notifications first
-- (this file's trigger then holds the user's counter row) and the user row after, so a send holding
-- the user row while it waited for the counter row would deadlock with it. Waiting here instead, the
-- send then finds the user gone and stores nothing (IB001).
CREATE OR REPLACE FUNCTION inbox_unread_lock(p_users {user_argument}[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    PERFORM 1 FROM inbox_unread_counter c WHERE c.user_id = ANY(p_users) ORDER BY c.user_id FOR NO KEY UPDATE;
END
$fn$;

-- A user's unread, unexpired notifications at p_now: the counter, plus the unread rows whose
-- expiry is still ahead. The send functions (store/sql/notification_insert*.sql), a socket's
-- connect (store/connect.py) and the selectors all count through it, in FROM
-- (``SELECT unread FROM inbox_unread(...)``, ``LATERAL inbox_unread(...)``). It returns a table of
-- one row, without a SET clause, so that PostgreSQL inlines it into the statement that calls it: a
-- scalar function with subqueries is not inlined, and a send to 1,000 recipients paid 3x for the
-- calls (bench/JOURNAL.md, finding 76).
CREATE OR REPLACE FUNCTION inbox_unread(p_user {user_argument}, p_now timestamptz) RETURNS TABLE (unread bigint)
LANGUAGE sql STABLE ROWS 1
AS $fn$
    SELECT COALESCE((SELECT c.unread FROM inbox_unread_counter c WHERE c.user_id = p_user), 0)
         + (SELECT count(*) FROM {notifications} n
            WHERE n.recipient_id = p_user AND n.read_at IS NULL AND n.expires_at > p_now)
$fn$;
