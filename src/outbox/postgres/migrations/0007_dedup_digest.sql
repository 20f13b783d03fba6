-- notifyd queue schema on PostgreSQL, version 7: dedup keys (the SQLite queue's
-- 0012_dedup_digest.sql).
--
-- A notification that carries a dedup key holds it, scoped to its channel and recipient, until
-- `until_ms`; while it does, a notification with the same (channel, recipient, key) is not
-- stored but counted in the holder's `duplicates`. The primary key makes the check one atomic
-- upsert, also between daemons: INSERT … ON CONFLICT DO UPDATE locks the conflicting row, so
-- two daemons enqueueing the same key at once see one holder. Adding a NOT NULL column with a
-- constant default rewrites nothing (PostgreSQL 11 and later).
ALTER TABLE notifications ADD COLUMN duplicates bigint NOT NULL DEFAULT 0;

CREATE TABLE dedup_keys (
    channel         text   NOT NULL,
    recipient       text   NOT NULL,
    dedup_key       text   NOT NULL,
    notification_id text   NOT NULL,
    until_ms        bigint NOT NULL,
    PRIMARY KEY (channel, recipient, dedup_key)
);
CREATE INDEX dedup_keys_until ON dedup_keys (until_ms);
