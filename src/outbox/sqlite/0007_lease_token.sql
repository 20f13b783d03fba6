-- notifyd queue schema: the lease's fencing token.
--
-- `attempts` cannot fence a completion: a replay, a failover and a refunded attempt lower or
-- reset it, so a sender whose lease was lost could present the attempt number of a later lease
-- and have its stale outcome written. `lease` counts claims: every claim raises it and nothing
-- lowers it, and a completion must carry the row's current value.
ALTER TABLE notifications ADD COLUMN lease INTEGER NOT NULL DEFAULT 0;
