-- notifyd queue schema on PostgreSQL, version 9: the limits that belong to a provider account,
-- shared by every daemon on the queue.
--
-- `rate_limits` keeps one GCRA bucket per channel (`recipient` = '') and, only for channels
-- with a per-recipient limit, per channel and recipient: its theoretical arrival time in Unix
-- microseconds. A daemon reserves a few tokens at once with one statement that advances it
-- (`granted` is what that statement granted, read back by RETURNING). A bucket whose time has
-- passed is full again, so the sweep deletes such rows in bounded batches: the table holds only
-- the recipients sent to within about one interval.
CREATE TABLE rate_limits (
    channel    text    NOT NULL,
    recipient  text    NOT NULL DEFAULT '',
    tat_us     bigint  NOT NULL,
    granted    bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, recipient)
);
-- Every reservation updates a row: room on the page keeps the updates HOT, and frequent vacuums
-- keep the dead versions few.
ALTER TABLE rate_limits SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.05);
CREATE INDEX rate_limits_by_tat ON rate_limits (tat_us);

-- A channel held by one daemon (the provider's Retry-After, or credentials refused) is held by
-- every daemon: each reads the holds in force on its poll interval.
CREATE TABLE channel_holds (
    channel   text    NOT NULL PRIMARY KEY,
    until_ms  bigint  NOT NULL,
    because   text    NOT NULL CHECK (because IN ('retry_after', 'channel_fault'))
);
