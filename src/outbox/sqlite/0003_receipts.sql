-- notifyd queue schema, version 3: delivery receipts from providers.

-- Receipts as they arrive, verified. A receipt for a provider id we have not recorded yet (the
-- provider's callback beat our own write) waits here unmatched and is attached when the
-- notification's provider id is written.
CREATE TABLE receipts (
    id              INTEGER PRIMARY KEY,
    channel         TEXT    NOT NULL,
    provider_id     TEXT    NOT NULL,
    -- normalized: delivered, failed, or in_progress
    status          TEXT    NOT NULL CHECK (status IN ('delivered', 'failed', 'in_progress')),
    -- the provider's own word (Twilio MessageStatus, ...)
    provider_status TEXT    NOT NULL,
    error_code      TEXT,
    received_at     INTEGER NOT NULL,
    notification_id TEXT
) STRICT;
CREATE INDEX receipts_unmatched ON receipts (provider_id) WHERE notification_id IS NULL;
CREATE INDEX receipts_by_notification ON receipts (notification_id) WHERE notification_id IS NOT NULL;
CREATE INDEX notifications_by_provider_id ON notifications (provider_id) WHERE provider_id IS NOT NULL;
-- Retention purges finished rows by age.
CREATE INDEX notifications_finished ON notifications (updated_at)
    WHERE state IN ('delivered', 'failed', 'expired', 'cancelled');
