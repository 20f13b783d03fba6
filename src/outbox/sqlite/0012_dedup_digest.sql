-- notifyd queue schema, version 12: dedup keys (issue 15).
--
-- A notification that carries a dedup key holds it, scoped to its channel and recipient, until
-- `until_ms`; while it does, a notification with the same (channel, recipient, key) is not
-- stored but counted in the holder's `duplicates`. The primary key is what makes the check one
-- atomic upsert (INSERT … ON CONFLICT DO UPDATE … WHERE the window is over), never a read then
-- a write. A key whose window is over is taken over by the next notification that carries it.
ALTER TABLE notifications ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;

CREATE TABLE dedup_keys (
    channel         TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    dedup_key       TEXT    NOT NULL,
    notification_id TEXT    NOT NULL,
    until_ms        INTEGER NOT NULL,
    PRIMARY KEY (channel, recipient, dedup_key)
) STRICT, WITHOUT ROWID;
-- The sweep deletes keys whose window is over, oldest first.
CREATE INDEX dedup_keys_until ON dedup_keys (until_ms);
