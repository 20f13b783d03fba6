-- notifyd queue schema, version 5: the finished-rows index without a long IN list.
--
-- SQLite evaluates a partial index's WHERE on every insert and on every update of its columns,
-- and an IN list of more than two values builds a temporary b-tree each time: for this index,
-- twice per state change of every notification. Pairs are compared directly. The retention
-- query (writer.rs, `purge`) repeats this expression exactly, which is what lets it use the index.
DROP INDEX notifications_finished;
CREATE INDEX notifications_finished ON notifications (updated_at)
    WHERE state IN ('delivered', 'failed') OR state IN ('expired', 'cancelled');
