-- notifyd queue schema, version 12: dedup keys and digests (issue 15).
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

-- Digests. A notification sent to a channel that collects digests is stored as an item of the
-- digest open for its (channel, recipient, digest_key): `digest_id` names that digest, and the
-- item waits (queued, due never by itself) until the digest is sent, then ends as the digest
-- ended. The digest is a notification row of its own (`digest_key` set), due when its window
-- ends or at once when it holds `digest_max` items; `digest_open` is 1 until then, and the
-- claim clears it, so a later item opens a new digest. The unique index makes "join the open
-- digest or open one" a single upsert. `vars` keeps an item's template variables for the
-- digest template.
ALTER TABLE notifications ADD COLUMN digest_key TEXT;
ALTER TABLE notifications ADD COLUMN digest_open INTEGER;
ALTER TABLE notifications ADD COLUMN digest_items INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN digest_id TEXT;
ALTER TABLE notifications ADD COLUMN vars TEXT CHECK (vars IS NULL OR json_valid(vars));
CREATE UNIQUE INDEX notifications_open_digest ON notifications (channel, recipient, digest_key)
    WHERE digest_open = 1;
CREATE INDEX notifications_by_digest ON notifications (digest_id) WHERE digest_id IS NOT NULL;
