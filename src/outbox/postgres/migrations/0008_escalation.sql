-- notifyd queue schema on PostgreSQL: escalation with acknowledgement (the SQLite queue's
-- 0013_escalation.sql).
--
-- `escalate` is the steps still to come after this notification
-- ([{"after_ms", "channel", "to", "content"?}]), written by notifyd only: a row inserted with
-- plain SQL does not escalate. `escalation_of` names the chain's first notification on each
-- step notifyd queued (its `parent_id` is the step before it). `acked_at` is set on the chain's
-- first notification when anyone acknowledges the chain; a step is queued only while it is NULL,
-- read under that row's lock. Nullable columns without defaults: adding them rewrites nothing.
ALTER TABLE notifications ADD COLUMN escalate jsonb;
ALTER TABLE notifications ADD COLUMN escalation_of text;
ALTER TABLE notifications ADD COLUMN acked_at bigint;

-- What an acknowledgement cancels: the chain's step waiting in the queue.
CREATE INDEX notifications_escalation_waiting ON notifications (escalation_of)
    WHERE escalation_of IS NOT NULL AND state = 'queued';
