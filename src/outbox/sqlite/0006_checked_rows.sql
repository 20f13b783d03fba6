-- notifyd queue schema, version 6: rows other programs insert are validated before they are sent.
--
-- 1 when notifyd validated the row as it accepted it (API, CLI, a fallback route's child). A
-- plain-SQL INSERT leaves it 0, and the dispatcher applies the API's checks (recipient, content,
-- sizes, the channel's own rules, fallback routes) to the row before sending it: one that fails
-- ends `failed` with the code and field the API would have answered. Rows already queued when
-- this runs are checked too.
ALTER TABLE notifications ADD COLUMN checked INTEGER NOT NULL DEFAULT 0;
