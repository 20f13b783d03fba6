-- notifyd queue schema, version 2: failover between channels.

-- Channels this notification was already moved away from (JSON array), so failover never loops.
ALTER TABLE notifications ADD COLUMN tried TEXT CHECK (tried IS NULL OR json_valid(tried));
-- The channel of each attempt: after a failover, one notification has attempts on several.
ALTER TABLE attempts ADD COLUMN channel TEXT;
