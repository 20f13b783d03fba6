-- notifyd queue schema on PostgreSQL, version 11: the claim returns each row's recipient
-- preferences, so the dispatcher's delivery rules cost no round trip of their own.
--
-- `recipient_key` is the recipient as `recipients.address` stores it (normalized by
-- src/recipients.rs: an e-mail address without display name, in lower case), written by notifyd
-- with the row. The claim joins `recipients` on it. NULL on rows other programs inserted with
-- plain SQL (and on rows stored before this version): the dispatcher then reads their
-- recipients' preferences with a query of its own, as before. Not indexed: only read with the
-- row.
ALTER TABLE notifications ADD COLUMN recipient_key text;

-- The history's state index holds only the end states a page filters on that are not
-- `delivered`: failed, dead, expired and cancelled (as SQLite's 0014_lighter_history.sql).
-- Holding `queued` and `sending` too, every insert and every claim added an entry, and a
-- completion batch's fenced UPDATE (`state = 'sending'`) was planned as a scan of this index,
-- reading every entry a claim had left there since the last vacuum: tens of thousands per
-- batch while draining a backlog (pg_stat_user_indexes: 2,001 scans reading 37 million
-- entries in one bench run). Live rows are in `notifications_due`; a page of queued or
-- sending rows is found through it or along the creation index.
DROP INDEX notifications_history_state;
CREATE INDEX notifications_history_state ON notifications (state, created_at, id)
    WHERE state IN ('failed', 'dead', 'expired', 'cancelled');
