-- notifyd queue schema on PostgreSQL, version 10: a history page filtered by both a channel and
-- a state (`state=queued&channel=push`: "what is waiting on the sick channel?") walks one range
-- of its own, newest first.
--
-- Without it the planner, counting a few thousand such rows, read all of them from the claim's
-- due index (or the dead letters' index), which is keyed by channel but not ordered by creation,
-- and sorted them: 30-52 ms a page with 3,500-5,000 queued rows of one channel on a million-row
-- queue, growing with them until the planner switched to walking the state index instead
-- (measured with EXPLAIN ANALYZE; see BENCHMARKS.md). Here both equalities lead to one range
-- ordered by (created_at, id): 0.4 ms whatever its size.
--
-- Like the state index of 0003 it leaves out `delivered`, so a delivery adds no entry; each
-- notification adds one as it is queued and one as it is claimed.
--
-- On a queue that already holds rows, this migration builds the index while holding off writes
-- (CREATE INDEX in the migration's transaction): run it at a quiet time.
CREATE INDEX notifications_history_channel_state
    ON notifications (channel, state, created_at, id) WHERE state <> 'delivered';
