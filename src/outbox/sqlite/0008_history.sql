-- notifyd queue schema: the searchable history (GET /v1/notifications, notifyd list).
--
-- A history page is read newest first by (created_at, id) and continues after a cursor on the
-- same pair. Each index below ends in that pair, so a page is one range walked in order from
-- the most selective equality given (recipient, fallback_of, channel, state, or none), never a
-- sort; the other filters are checked on the rows walked. Only `state` changes after insert:
-- its index leaves out `delivered` (where most rows end, and which the plain index answers),
-- so delivery deletes the entry instead of moving it.
--
-- The others carry a condition true of every row (the table is STRICT): without it, SQLite
-- would pick them for other queries too (the receipt lookup by provider id and channel took
-- the channel index). History queries repeat each condition literally, which is what lets
-- SQLite use a partial index; nothing else says it.
CREATE INDEX notifications_history ON notifications (created_at, id)
    WHERE typeof(created_at) = 'integer';
CREATE INDEX notifications_history_channel ON notifications (channel, created_at, id)
    WHERE typeof(created_at) = 'integer';
CREATE INDEX notifications_history_recipient ON notifications (recipient, created_at, id)
    WHERE typeof(created_at) = 'integer';
CREATE INDEX notifications_history_state ON notifications (state, created_at, id)
    WHERE state <> 'delivered';
CREATE INDEX notifications_history_fallback ON notifications (parent_id, created_at, id)
    WHERE parent_id IS NOT NULL;
