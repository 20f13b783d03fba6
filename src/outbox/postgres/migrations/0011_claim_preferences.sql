-- notifyd queue schema on PostgreSQL, version 11: the claim returns each row's recipient
-- preferences, so the dispatcher's delivery rules cost no round trip of their own.
--
-- `recipient_key` is the recipient as `recipients.address` stores it (normalized by
-- src/recipients.rs: an e-mail address without display name, in lower case), written by notifyd
-- with the row. The claim joins `recipients` on it. NULL on rows other programs inserted with
-- plain SQL (and on rows stored before this version): the dispatcher then reads their
-- recipients' preferences with a query of its own, as before. Not indexed: only read with the
-- row.
ALTER TABLE notifications ADD COLUMN recipient_key text;
