-- notifyd queue schema on PostgreSQL, version 3: the searchable history (GET /v1/notifications,
-- notifyd list), the indexes of the SQLite queue's 0008_history.sql.
--
-- A history page is read newest first by (created_at, id) and continues after a cursor on the
-- same pair. Each index below ends in that pair, so a page is one range of one index walked in
-- order from the most selective equality given (recipient, fallback_of, channel, state, or
-- none), never a sort; the other filters are checked on the rows walked. They are ascending and
-- read backwards: new rows land at the right end of the creation index, where PostgreSQL's
-- inserts take their fast path and its page splits leave full pages.
--
-- Only `state` changes after insert: its index leaves out `delivered` (where most rows end, and
-- which the creation index answers), so the row version a delivery writes adds no entry to it.
-- Every index here is one more entry per row version written (a state change is never a HOT
-- update: `state` is in the due index's condition); that is the price of a searchable history,
-- kept to these five.
--
-- On a queue that already holds rows, this migration builds the indexes while holding off
-- writes (CREATE INDEX in the migration's transaction): run it at a quiet time.
CREATE INDEX notifications_history ON notifications (created_at, id);
CREATE INDEX notifications_history_channel ON notifications (channel, created_at, id);
CREATE INDEX notifications_history_recipient ON notifications (recipient, created_at, id);
CREATE INDEX notifications_history_state ON notifications (state, created_at, id)
    WHERE state <> 'delivered';
CREATE INDEX notifications_history_fallback ON notifications (parent_id, created_at, id)
    WHERE parent_id IS NOT NULL;
