-- notifyd queue schema on PostgreSQL, version 6: recipient preferences, and a notification's own
-- delivery window (the SQLite queue's 0011_recipients.sql).
--
-- `recipients` holds one row per address (normalized as src/recipients.rs says: e-mail in lower
-- case), its preferences as JSON ({"time_zone", "quiet_hours", "muted", "opted_out",
-- "high_priority_passes"}). Only notifyd writes it. The dispatcher reads the rows of a claim's
-- recipients with one `address = ANY($1)`.
CREATE TABLE recipients (
    address text PRIMARY KEY,
    preferences jsonb NOT NULL,
    updated_at bigint NOT NULL
);

-- `deliver_between` is JSON {"start": "09:00", "end": "17:00", "time_zone": "Europe/Paris"}: the
-- local hours it may be sent in; NULL for no window. Rows written with plain SQL may set it; it
-- is checked like an API request's when they are claimed.
ALTER TABLE notifications ADD COLUMN deliver_between jsonb;
