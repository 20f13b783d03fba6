//! Every statement of the PostgreSQL outbox, as constants: none is built per call. Tables are
//! unqualified; the connection's `search_path` is the queue's schema.
//!
//! Times are the daemon's clock (Unix ms) bound as parameters, never the server's `now()`, so
//! the store's clock is the one the rules and the tests use.

/// Group commit: every notification of the batch in one statement, columns as arrays. A key
/// already held (also by an earlier row of the same statement) inserts nothing; the caller
/// looks its holder up with [`KEY_HOLDERS`].
pub const INSERT: &str = "INSERT INTO notifications (id, channel, recipient, subject, body, html,
         data, priority, run_at, expires_at, created_at, updated_at, idempotency_key,
         content_hash, fallback, parent_id, checked, source)
     SELECT id, channel, recipient, subject, body, html, data::jsonb, priority, run_at,
            expires_at, created_at, created_at, idempotency_key, content_hash, fallback::jsonb,
            parent_id, true, source::jsonb
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::text[],
                 $13::text[], $14::text[], $15::text[], $16::text[])
          AS t(id, channel, recipient, subject, body, html, data, priority, run_at, expires_at,
               created_at, idempotency_key, content_hash, fallback, parent_id, source)
     ON CONFLICT (idempotency_key) DO NOTHING
     RETURNING id";

/// The holders of several idempotency keys.
pub const KEY_HOLDERS: &str = "SELECT idempotency_key, id, state, content_hash
     FROM notifications WHERE idempotency_key = ANY($1::text[])";

/// The holder of one idempotency key.
pub const KEY_HOLDER: &str =
    "SELECT id, state, content_hash FROM notifications WHERE idempotency_key = $1";

/// The claim, as River and Oban do it: the CTE picks and locks at most `$5` due rows of the
/// channel in claim order, skipping rows another daemon is locking right now, and the UPDATE
/// changes exactly those (an `UPDATE … WHERE id IN (subquery LIMIT n)` may be re-evaluated and
/// touch more than n). Each claim raises the lease token. `due_at` is the row's due time before
/// the claim, to return rows in claim order (RETURNING has none).
pub const CLAIM: &str = "WITH due AS (
         SELECT id, run_at, prio_rank FROM notifications
         WHERE channel = $4 AND state IN ('queued', 'sending') AND run_at <= $3
         ORDER BY prio_rank, run_at, id
         LIMIT $5
         FOR UPDATE SKIP LOCKED)
     UPDATE notifications n
     SET state = 'sending',
         attempts = CASE WHEN n.attempts BETWEEN 0 AND 4294967294 THEN n.attempts + 1
                         ELSE n.attempts END,
         lease = n.lease + 1, lease_owner = $1, run_at = $2, updated_at = $3
     FROM due
     WHERE n.id = due.id
     RETURNING n.id, n.channel, n.recipient, n.subject, n.body, n.html, n.data, n.created_at,
               n.attempts, n.expires_at, n.tried, due.prio_rank, n.checked,
               CASE WHEN n.checked THEN NULL ELSE n.fallback END AS fallback, n.lease,
               due.run_at AS due_at";

/// Ends a claimed row that cannot be decoded (`dead`, `unreadable_row`), by id.
pub const QUARANTINE: &str =
    "UPDATE notifications SET state = 'dead', last_code = 'unreadable_row', last_error = $2,
         lease_owner = NULL, updated_at = $3
     WHERE id = $1";

/// The fenced completions: a row changes only while the completion's lease is its current one.
macro_rules! fenced {
    ($set:literal) => {
        concat!(
            "UPDATE notifications SET ",
            $set,
            " WHERE id = $1 AND lease = $2 AND lease_owner = $3 AND state = 'sending'"
        )
    };
}
pub const DELIVER: &str = fenced!(
    "state = 'delivered', provider_id = $4, lease_owner = NULL, last_code = NULL,
     last_error = NULL, updated_at = $5"
);
pub const REQUEUE: &str = fenced!(
    "state = 'queued', run_at = $4, attempts = attempts - $5, lease_owner = NULL,
     last_code = $6, last_error = $7, updated_at = $8"
);
pub const REQUEUE_KEEPING_ERROR: &str = fenced!(
    "state = 'queued', run_at = $4, attempts = attempts - $5, lease_owner = NULL,
     updated_at = $6"
);
pub const END: &str =
    fenced!("state = $4, lease_owner = NULL, last_code = $5, last_error = $6, updated_at = $7");
pub const MOVE: &str = fenced!(
    "tried = coalesce(tried, '[]'::jsonb) || to_jsonb(channel), channel = $4, state = 'queued',
     attempts = 0, run_at = $5, lease_owner = NULL, last_code = $6, last_error = $7,
     updated_at = $8"
);

pub const RECORD_ATTEMPT: &str = "INSERT INTO attempts (notification_id, attempt, started_at,
         latency_ms, outcome, code, error, provider_id, decision, channel)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
             (SELECT channel FROM notifications WHERE id = $1))";

pub const FALLBACK_PARENT: &str =
    "SELECT fallback, subject, body, html, data, priority, expires_at, created_at
     FROM notifications WHERE id = $1";

/// A row whose fallback routes cannot be read ends dead, saying how it had ended.
pub const END_UNREADABLE: &str = "UPDATE notifications SET state = 'dead', last_code = $2,
         last_error = $3 || '; its fallback was not queued after it ended ' || state || ' ('
             || coalesce(last_code, '') || ': ' || coalesce(last_error, '') || ')',
         lease_owner = NULL, updated_at = $4
     WHERE id = $1";

pub const CANCEL: &str = "UPDATE notifications SET state = $4, updated_at = $2
     WHERE id = $1 AND state = $3";
pub const REPLAY: &str = "UPDATE notifications SET state = $4, attempts = 0, run_at = $2,
         lease_owner = NULL, updated_at = $2
     WHERE id = $1 AND state = $3";
pub const STATE: &str = "SELECT state FROM notifications WHERE id = $1";

pub const DEFER_DUE: &str =
    "UPDATE notifications SET run_at = $3, last_code = $5, last_error = $6, updated_at = $2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = $1 AND state IN ('queued', 'sending') AND state = 'queued'
                    AND run_at <= $2
                  ORDER BY prio_rank, run_at, id LIMIT $4
                  FOR UPDATE SKIP LOCKED)";

pub const REROUTE_DUE: &str =
    "UPDATE notifications SET tried = coalesce(tried, '[]'::jsonb) || to_jsonb(channel),
         channel = $3, run_at = $2, attempts = 0, last_code = $5, last_error = $6, updated_at = $2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = $1 AND state IN ('queued', 'sending') AND state = 'queued'
                    AND run_at <= $2
                    AND NOT coalesce(tried, '[]'::jsonb) @> jsonb_build_array($3::text)
                  ORDER BY prio_rank, run_at, id LIMIT $4
                  FOR UPDATE SKIP LOCKED)";

pub const RECEIPT_TARGET: &str =
    "SELECT id FROM notifications WHERE provider_id = $1 AND channel = $2 LIMIT 1";

pub const INSERT_RECEIPT: &str = "INSERT INTO receipts (channel, provider_id, status,
         provider_status, error_code, received_at, notification_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (channel, provider_id, provider_status) DO NOTHING";

pub const EARLY_RECEIPTS: &str = "UPDATE receipts SET notification_id = $1
     WHERE provider_id = $2 AND notification_id IS NULL
       AND channel = (SELECT channel FROM notifications WHERE id = $1)
     RETURNING status, provider_status, error_code";

pub const FAIL_BY_RECEIPT: &str =
    "UPDATE notifications SET state = $6, last_code = $2, last_error = $3, updated_at = $4
     WHERE id = $1 AND state = $5";

pub const EXPIRE_OVERDUE: &str =
    "UPDATE notifications SET state = 'expired', last_code = $2, last_error = $3, updated_at = $1
     WHERE id IN (SELECT id FROM notifications
                  WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= $1
                  LIMIT $4 FOR UPDATE SKIP LOCKED)
     RETURNING id, channel";

pub const LIVE_CHANNELS: &str =
    "SELECT DISTINCT channel FROM notifications WHERE state IN ('queued', 'sending')";

pub const DEAD_LETTER_ORPHANS: &str =
    "UPDATE notifications SET state = 'dead', last_code = $3, last_error = $4, lease_owner = NULL,
         updated_at = $2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = $1 AND state IN ('queued', 'sending')
                    AND (state = 'queued' OR run_at <= $2)
                  LIMIT $5 FOR UPDATE SKIP LOCKED)";

/// One retention batch in one statement: the oldest finished notifications (at most `$2`), with
/// their attempts and receipts.
pub const PURGE_FINISHED: &str = "WITH old AS (
         SELECT id FROM notifications
         WHERE state IN ('delivered', 'failed', 'expired', 'cancelled') AND updated_at < $1
         ORDER BY updated_at LIMIT $2
         FOR UPDATE SKIP LOCKED),
     gone_attempts AS (DELETE FROM attempts WHERE notification_id IN (SELECT id FROM old)),
     gone_receipts AS (DELETE FROM receipts WHERE notification_id IN (SELECT id FROM old))
     DELETE FROM notifications WHERE id IN (SELECT id FROM old)";

pub const PURGE_UNMATCHED_RECEIPTS: &str = "DELETE FROM receipts WHERE id IN (
         SELECT id FROM receipts WHERE notification_id IS NULL AND received_at < $1
         LIMIT $2 FOR UPDATE SKIP LOCKED)";

pub const GET: &str = "SELECT id, channel, recipient, state, priority, attempts, created_at,
         run_at, expires_at, provider_id, last_code, last_error, parent_id, fallback, source
     FROM notifications WHERE id = $1";

/// What a notification says.
pub const CONTENT: &str = "SELECT subject, body, html, data FROM notifications WHERE id = $1";

/// One page of the history: a walk of at most `$13` rows, newest first by `(created_at, id)`,
/// after the cursor `($11, $12)`. Run as an unnamed statement, planned with its values: each
/// filter not given (NULL) then folds away, and the equalities left (state `$1`, channel `$2`,
/// recipient `$3`, fallback_of `$4`) and the creation range (`$6`–`$7`) pick the
/// `0003_history.sql` index walked. The filters no index answers (priority `$5`, update range
/// `$8`–`$9`, subject text `$10`, in lower-case ASCII) make the `hit` column, so the walk's
/// LIMIT bounds the rows walked, not the rows found; the page keeps the hits (at most `$14`
/// rows) and the last row of a walk that reached its bound. The text is matched as SQLite's
/// LIKE does: ASCII letters fold (`lower` in the "C" collation folds nothing else), nothing is a
/// wildcard.
pub const HISTORY: &str = "SELECT id, channel, recipient, state, priority, attempts, subject,
         created_at, updated_at, parent_id, last_code, hit, walked
     FROM (SELECT id, channel, recipient, state, priority, attempts, subject, created_at,
                  updated_at, parent_id, last_code,
                  ($5::text IS NULL OR priority = $5)
                  AND ($8::int8 IS NULL OR updated_at >= $8)
                  AND ($9::int8 IS NULL OR updated_at < $9)
                  AND ($10::text IS NULL
                       OR coalesce(strpos(lower(subject COLLATE \"C\"), $10) > 0, false)) AS hit,
                  row_number() OVER (ORDER BY created_at DESC, id DESC) AS walked
           FROM notifications
           WHERE ($1::text IS NULL OR state = $1)
             AND ($1::text IS NULL OR $1 = 'delivered' OR state <> 'delivered')
             AND ($2::text IS NULL OR channel = $2)
             AND ($3::text IS NULL OR recipient = $3)
             AND ($4::text IS NULL OR parent_id = $4)
             AND ($6::int8 IS NULL OR created_at >= $6)
             AND ($7::int8 IS NULL OR created_at < $7)
             AND ($11::int8 IS NULL OR (created_at, id) < ($11, $12::text))
           ORDER BY created_at DESC, id DESC
           LIMIT $13) AS walk
     WHERE hit OR walked = $13
     LIMIT $14";

pub const ATTEMPTS: &str = "SELECT attempt, started_at, latency_ms, outcome, code, error,
         provider_id, decision, channel
     FROM attempts WHERE notification_id = $1 ORDER BY attempt, seq";

pub const RECEIPTS: &str = "SELECT status, provider_status, error_code, received_at FROM receipts
     WHERE notification_id = $1 ORDER BY received_at, id";

pub const DEAD_LETTERS: &str = "SELECT id, channel, recipient, attempts, last_code, last_error,
         updated_at
     FROM notifications
     WHERE state = 'dead' AND ($1::text IS NULL OR channel = $1)
     ORDER BY updated_at DESC LIMIT $2";

pub const DEPTH: &str = "SELECT channel, state, count(*) FROM notifications
     WHERE state IN ('queued', 'sending', 'dead') GROUP BY channel, state";

/// Per channel, the oldest due time: for each priority one seek of the due index.
pub const OLDEST_DUE: &str = "SELECT c, min(d.run_at) FROM unnest($1::text[]) AS c
     CROSS JOIN generate_series(0, 2) AS r
     CROSS JOIN LATERAL (
         SELECT run_at FROM notifications
         WHERE channel = c AND state IN ('queued', 'sending') AND prio_rank = r::smallint
           AND run_at <= $2
         ORDER BY run_at LIMIT 1) AS d
     GROUP BY c";

/// A primary can take writes; a standby (or a server recovering) cannot.
pub const WRITABLE: &str = "SELECT NOT pg_is_in_recovery()";

/// Takes or keeps the lead of task `$1` for daemon `$2` until `$3`: granted when nobody leads
/// it, this daemon already does, or the last leader's term ended (`$4` is now). Returns a row
/// only when granted.
pub const LEAD: &str = "INSERT INTO leaders (task, owner, until) VALUES ($1, $2, $3)
     ON CONFLICT (task) DO UPDATE SET owner = excluded.owner, until = excluded.until
     WHERE leaders.owner = excluded.owner OR leaders.until <= $4
     RETURNING owner";

/// One wake-up hint per channel given (`$1` is the schema's wake-up channel): delivered to every
/// listening daemon when the transaction commits.
pub const NOTIFY: &str = "SELECT pg_notify($1, c) FROM unnest($2::text[]) AS c";

/// Serialises migrations through PgBouncer: a lock held until the migrating transaction ends.
pub const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";
