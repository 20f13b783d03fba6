-- notifyd queue schema, version 1.
--
-- The `notifications` table is a public contract: any program may enqueue with a plain INSERT
-- naming at least `channel`, `recipient` and some content (`body`, `subject`, `html` or `data`);
-- every other column has a default. A running daemon picks new rows up within its poll interval.
-- Times are Unix milliseconds (UTC).

CREATE TABLE notifications (
    id              TEXT    NOT NULL PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))),
    channel         TEXT    NOT NULL,
    recipient       TEXT    NOT NULL,
    subject         TEXT,
    body            TEXT,
    html            TEXT,
    data            TEXT    CHECK (data IS NULL OR json_valid(data)),
    priority        TEXT    NOT NULL DEFAULT 'normal' CHECK (priority IN ('high', 'normal', 'low')),
    prio_rank       INTEGER GENERATED ALWAYS AS
                        (CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END) VIRTUAL,
    state           TEXT    NOT NULL DEFAULT 'queued' CHECK (state IN
                        ('queued', 'sending', 'delivered', 'failed', 'dead', 'cancelled', 'expired')),
    created_at      INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    -- queued: when it is due (send_at, or the retry time). sending: when the lease expires, after
    -- which any dispatcher may claim it again. The lease expiry doubles as the retry time.
    run_at          INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    expires_at      INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    idempotency_key TEXT    UNIQUE,
    content_hash    TEXT,
    fallback        TEXT    CHECK (fallback IS NULL OR json_valid(fallback)),
    parent_id       TEXT,
    provider_id     TEXT,
    last_code       TEXT,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
) STRICT;

-- The claim walks this index: only live rows are in it, so a million delivered rows cost nothing.
CREATE INDEX notifications_due ON notifications (channel, prio_rank, run_at)
    WHERE state IN ('queued', 'sending');
CREATE INDEX notifications_expiring ON notifications (expires_at)
    WHERE state = 'queued' AND expires_at IS NOT NULL;
CREATE INDEX notifications_dead ON notifications (channel, updated_at)
    WHERE state = 'dead';

-- Every delivery attempt, kept for GET /v1/notifications/{id}.
CREATE TABLE attempts (
    notification_id TEXT    NOT NULL,
    attempt         INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    latency_ms      INTEGER NOT NULL,
    -- delivered, transient, rate_limited, invalid_recipient, permanent, channel_fault, expired
    outcome         TEXT    NOT NULL,
    code            TEXT,
    error           TEXT,
    provider_id     TEXT,
    -- what the dispatcher decided: delivered, retry, deferred, failed, dead, expired, released
    decision        TEXT    NOT NULL
) STRICT;
CREATE INDEX attempts_by_notification ON attempts (notification_id, attempt);
