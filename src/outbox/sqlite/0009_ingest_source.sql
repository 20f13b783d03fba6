-- notifyd queue schema: where an ingested notification came from.
--
-- `source` is JSON, {"format", "route", "ids"}: the sender's format (alertmanager, grafana,
-- apprise, ntfy), the ingest route that took it, and the sender's own identifiers (group key,
-- fingerprints, topic, ...). NULL for notifications submitted through the API, the CLI or SQL.
-- A nullable column without a default: adding it rewrites nothing, and an insert that leaves it
-- NULL costs nothing more.
ALTER TABLE notifications ADD COLUMN source TEXT CHECK (source IS NULL OR json_valid(source));
