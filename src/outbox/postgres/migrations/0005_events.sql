-- notifyd queue schema on PostgreSQL, version 5: the delivery rules' timeline (the SQLite
-- queue's 0010_events.sql).
--
-- One row each time a rule acted on a notification: `rule` names the rule (`Rule::as_str`),
-- `detail` says what it did. Shown by GET /v1/notifications/{id} beside the attempts, and
-- deleted with the notification by retention.
CREATE TABLE events (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id text   NOT NULL,
    at              bigint NOT NULL,
    rule            text   NOT NULL,
    detail          text   NOT NULL DEFAULT ''
);
CREATE INDEX events_by_notification ON events (notification_id, at);
ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.02);
