-- notifyd queue schema: recipient preferences, and a notification's own delivery window.
--
-- `recipients` holds one row per address (normalized as src/recipients.rs says: e-mail in lower
-- case), its preferences as JSON ({"time_zone", "quiet_hours", "muted", "opted_out",
-- "high_priority_passes"}). Only notifyd writes it, through PUT /v1/recipients/{address}, the CLI
-- and the unsubscribe link. The dispatcher reads the rows of a claim's recipients in one query.
CREATE TABLE recipients (
    address TEXT PRIMARY KEY NOT NULL,
    preferences TEXT NOT NULL CHECK (json_valid(preferences)),
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- `deliver_between` is JSON {"start": "09:00", "end": "17:00", "time_zone": "Europe/Paris"}: the
-- local hours it may be sent in. NULL (the default, nothing stored) for no window. Rows written
-- with plain SQL may set it; it is checked like an API request's when they are claimed.
ALTER TABLE notifications ADD COLUMN deliver_between TEXT
    CHECK (deliver_between IS NULL OR json_valid(deliver_between));
