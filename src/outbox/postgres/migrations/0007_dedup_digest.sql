-- notifyd queue schema on PostgreSQL, version 7: dedup keys and digests (the SQLite queue's
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

-- Digests (see the SQLite file for the whole story): items point at their digest with
-- `digest_id` and wait, queued but never due by themselves, until it is sent; the digest is a
-- row of its own with `digest_key`, open (`digest_open`) until claimed or full. The unique
-- partial index makes "join the open digest or open one" a single upsert between daemons.
ALTER TABLE notifications ADD COLUMN digest_key text;
ALTER TABLE notifications ADD COLUMN digest_open boolean;
ALTER TABLE notifications ADD COLUMN digest_items bigint NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN digest_id text;
ALTER TABLE notifications ADD COLUMN vars jsonb;
CREATE UNIQUE INDEX notifications_open_digest ON notifications (channel, recipient, digest_key)
    WHERE digest_open;
CREATE INDEX notifications_by_digest ON notifications (digest_id) WHERE digest_id IS NOT NULL;
