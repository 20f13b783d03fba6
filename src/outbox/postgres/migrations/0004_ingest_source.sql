-- notifyd queue schema on PostgreSQL, version 4: where an ingested notification came from (the
-- SQLite queue's 0009_ingest_source.sql).
--
-- `source` is JSON, {"format", "route", "ids"}: the sender's format (alertmanager, grafana,
-- apprise, ntfy), the ingest route that took it, and the sender's own identifiers (group key,
-- fingerprints, topic, ...). NULL for notifications submitted through the API, the CLI or SQL.
-- A nullable column without a default: adding it rewrites nothing, and a row that leaves it
-- NULL stores nothing for it.
ALTER TABLE notifications ADD COLUMN source jsonb;
