-- notifyd queue schema: a history state index that no delivery touches.
--
-- 0008's state index held every row not delivered: each insert added an entry (`queued`), each
-- claim moved it (`sending`), each delivery deleted it, three index writes on the way of every
-- notification for a search the console rarely makes. It now holds only the ends that are not
-- delivered, where a row stops (or, replayed, leaves once): failed, dead, expired, cancelled.
-- Those are the states an operator looks for among a mostly delivered history. A page of
-- queued or sending rows walks the creation index (or the channel's, the recipient's) and
-- checks the state on each row walked, like text: live rows are the newest, so the first
-- pages are full; the walk is bounded, so a page stays fast when they are few.
--
-- Pairs, not a four-value IN list: see 0005. History queries repeat this condition literally,
-- which is what lets SQLite use a partial index.
DROP INDEX notifications_history_state;
CREATE INDEX notifications_history_ended ON notifications (state, created_at, id)
    WHERE state IN ('failed', 'dead') OR state IN ('expired', 'cancelled');
