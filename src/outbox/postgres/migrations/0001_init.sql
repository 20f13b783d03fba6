-- notifyd queue schema on PostgreSQL, version 1: the SQLite queue's tables (0001–0007 there) in
-- one step, in the schema named by `queue.schema` (the connection's search_path).
--
-- The `notifications` table is the same public contract as on SQLite: any program may enqueue
-- with a plain INSERT naming at least `channel`, `recipient` and some content; every other column
-- has a default. Times are Unix milliseconds (UTC), written by the daemon from its own clock.

CREATE TABLE notifications (
    id              text     NOT NULL PRIMARY KEY DEFAULT md5(random()::text || clock_timestamp()::text),
    channel         text     NOT NULL,
    recipient       text     NOT NULL,
    subject         text,
    body            text,
    html            text,
    data            jsonb,
    priority        text     NOT NULL DEFAULT 'normal' CHECK (priority IN ('high', 'normal', 'low')),
    prio_rank       smallint GENERATED ALWAYS AS
                        (CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END) STORED,
    state           text     NOT NULL DEFAULT 'queued' CHECK (state IN
                        ('queued', 'sending', 'delivered', 'failed', 'dead', 'cancelled', 'expired')),
    created_at      bigint   NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    -- queued: when it is due. sending: when the lease expires, after which any daemon may claim
    -- it again.
    run_at          bigint   NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
    expires_at      bigint,
    attempts        bigint   NOT NULL DEFAULT 0,
    -- The daemon holding the lease: completions are fenced by it and by `lease`.
    lease_owner     text,
    -- Counts claims; only ever raised. A completion must carry the row's current value.
    lease           bigint   NOT NULL DEFAULT 0,
    idempotency_key text     UNIQUE,
    content_hash    text,
    -- Fallback routes (JSON array), and channels already failed over from (JSON array of names).
    fallback        jsonb,
    tried           jsonb,
    parent_id       text,
    provider_id     text,
    last_code       text,
    last_error      text,
    -- true on rows notifyd validated as it wrote them; a plain-SQL row is checked when claimed.
    checked         boolean  NOT NULL DEFAULT false,
    updated_at      bigint   NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
);

-- The claim walks this index in its ORDER BY: only live rows are in it.
CREATE INDEX notifications_due ON notifications (channel, prio_rank, run_at, id)
    WHERE state IN ('queued', 'sending');
CREATE INDEX notifications_expiring ON notifications (expires_at)
    WHERE state = 'queued' AND expires_at IS NOT NULL;
CREATE INDEX notifications_dead ON notifications (channel, updated_at) WHERE state = 'dead';
CREATE INDEX notifications_by_provider_id ON notifications (provider_id)
    WHERE provider_id IS NOT NULL;
-- Retention deletes finished rows by age, in bounded batches.
CREATE INDEX notifications_finished ON notifications (updated_at)
    WHERE state IN ('delivered', 'failed', 'expired', 'cancelled');

-- Every delivery attempt, kept for GET /v1/notifications/{id}.
CREATE TABLE attempts (
    seq             bigint   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id text     NOT NULL,
    attempt         bigint   NOT NULL,
    started_at      bigint   NOT NULL,
    latency_ms      bigint   NOT NULL,
    outcome         text     NOT NULL,
    code            text,
    error           text,
    provider_id     text,
    decision        text     NOT NULL,
    channel         text
);
CREATE INDEX attempts_by_notification ON attempts (notification_id, attempt);

-- Receipts as they arrive, verified; one whose notification is not known yet waits unmatched.
CREATE TABLE receipts (
    id              bigint   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel         text     NOT NULL,
    provider_id     text     NOT NULL,
    status          text     NOT NULL CHECK (status IN ('delivered', 'failed', 'in_progress')),
    provider_status text     NOT NULL,
    error_code      text,
    received_at     bigint   NOT NULL,
    notification_id text,
    UNIQUE (channel, provider_id, provider_status)
);
CREATE INDEX receipts_unmatched ON receipts (provider_id) WHERE notification_id IS NULL;
CREATE INDEX receipts_by_notification ON receipts (notification_id)
    WHERE notification_id IS NOT NULL;

-- Every notification is updated several times and deleted by retention: dead tuples are the
-- failure mode at scale. Vacuum these tables after 1 % of their rows changed, not the default
-- 20 %, and leave room on each page for HOT updates (no index entry for a state change that
-- touches no indexed column).
ALTER TABLE notifications SET (autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02, fillfactor = 80);
ALTER TABLE attempts SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE receipts SET (autovacuum_vacuum_scale_factor = 0.02);
