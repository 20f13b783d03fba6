-- notifyd queue schema: the delivery rules' timeline.
--
-- One row each time a rule acted on a notification (deferred it for quiet hours, merged it into
-- a digest, counted a duplicate, escalated it, took an acknowledgement, ...): `rule` names the
-- rule (`Rule::as_str`), `detail` says what it did in words. Shown by GET /v1/notifications/{id}
-- beside the attempts, and deleted with the notification by retention.
CREATE TABLE events (
    notification_id TEXT    NOT NULL,
    at              INTEGER NOT NULL,
    rule            TEXT    NOT NULL,
    detail          TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX events_by_notification ON events (notification_id, at);
