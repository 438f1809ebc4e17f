-- Before migration 0018 (and after going back from it): the two functions the send functions call
-- (store/sql/notification_insert*.sql), without a counter. inbox_unread() counts the rows;
-- inbox_unread_lock() has nothing to lock. Migration 0002 creates them with the send functions (it
-- loads today's source of those, which call them), 0018 replaces them with the counter's
-- (store/sql/unread_counter.sql), and going back from 0018 creates these again.
--
-- {notifications} is the quoted table of inbox.Notification and {user_argument} the type of the
-- recipient key (bigint for any integer: store/unread.py, argument_type), filled in by the migration.

CREATE OR REPLACE FUNCTION inbox_unread(p_user {user_argument}, p_now timestamptz) RETURNS TABLE (unread bigint)
LANGUAGE sql STABLE ROWS 1
AS $fn$
    SELECT count(*) FROM {notifications} n
    WHERE n.recipient_id = p_user AND n.read_at IS NULL AND (n.expires_at IS NULL OR n.expires_at > p_now)
$fn$;

CREATE OR REPLACE FUNCTION inbox_unread_lock(p_users {user_argument}[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
END
$fn$;
