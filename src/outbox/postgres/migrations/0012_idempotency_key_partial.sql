-- notifyd queue schema on PostgreSQL, version 12: the idempotency keys' unique index holds only
-- the rows that have a key.
--
-- `idempotency_key text UNIQUE` (0001) indexed every row, NULL keys included, and no update of
-- a notification is HOT (`state` is in the due index's condition): each row version a claim or
-- a completion writes added one more entry there, three per delivered notification without a
-- key. Partial, the index gets an entry only from rows that carry a key, and uniqueness among
-- them is what it was (NULLs never conflicted). notifyd's insert names the index's condition in
-- its `ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL`; a program inserting
-- with plain SQL and its own `ON CONFLICT (idempotency_key)` must name it too.
--
-- On a queue that already holds rows, this migration builds the index while holding off writes
-- (CREATE INDEX in the migration's transaction): run it at a quiet time.
ALTER TABLE notifications DROP CONSTRAINT notifications_idempotency_key_key;
CREATE UNIQUE INDEX notifications_idempotency_key ON notifications (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
