//! Every statement of the PostgreSQL outbox, as constants: none is built per call. Tables are
//! unqualified; the connection's `search_path` is the queue's schema.
//!
//! Times are the daemon's clock (Unix ms) bound as parameters, never the server's `now()`, so
//! the store's clock is the one the rules and the tests use.

/// Group commit: every notification of the batch in one statement, columns as arrays. A key
/// already held (also by an earlier row of the same statement) inserts nothing; the caller
/// looks its holder up with [`KEY_HOLDERS`].
pub(super) const INSERT: &str =
    "INSERT INTO notifications (id, channel, recipient, subject, body, html,
         data, priority, run_at, expires_at, created_at, updated_at, idempotency_key,
         content_hash, fallback, parent_id, checked, source, deliver_between, escalate,
         escalation_of, recipient_key)
     SELECT id, channel, recipient, subject, body, html, data::jsonb, priority, run_at,
            expires_at, created_at, created_at, idempotency_key, content_hash, fallback::jsonb,
            parent_id, true, source::jsonb, deliver_between::jsonb, escalate::jsonb, escalation_of,
            recipient_key
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::text[],
                 $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                 $19::text[], $20::text[])
          AS t(id, channel, recipient, subject, body, html, data, priority, run_at, expires_at,
               created_at, idempotency_key, content_hash, fallback, parent_id, source,
               deliver_between, escalate, escalation_of, recipient_key)
     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
     RETURNING id";

/// Takes a dedup key for a notification: a new key, or one whose window is over
/// ([`crate::rules::dedup::holds`] no longer). Returns the id only when
/// the key is now the caller's. ON CONFLICT DO UPDATE locks the conflicting row even when its
/// WHERE is false, so a daemon enqueueing the same key at once waits for this transaction and
/// then sees its holder: one atomic step, not a read then a write.
pub(super) const TAKE_DEDUP_KEY: &str =
    "INSERT INTO dedup_keys (channel, recipient, dedup_key, notification_id, until_ms)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (channel, recipient, dedup_key) DO UPDATE
         SET notification_id = excluded.notification_id, until_ms = excluded.until_ms
         WHERE dedup_keys.until_ms <= $6
     RETURNING notification_id";

/// Gives a dedup key whose holder is gone (purged by retention while its window ran) to a new
/// holder. Only after [`TAKE_DEDUP_KEY`] locked the row and [`COUNT_DUPLICATE`] found no holder:
/// a later statement, so it sees every holder committed meanwhile (a subquery in the upsert
/// would read the upsert's older snapshot and miss a holder another daemon just committed).
pub(super) const TAKE_ORPHANED_DEDUP_KEY: &str =
    "UPDATE dedup_keys SET notification_id = $4, until_ms = $5
     WHERE channel = $1 AND recipient = $2 AND dedup_key = $3";

/// Counts one more duplicate on the holder of a dedup key; its id and state. The count stops
/// at the largest bigint: another program may have stored it there, and a duplicate must still
/// be answered.
pub(super) const COUNT_DUPLICATE: &str = "UPDATE notifications
     SET duplicates = least(duplicates, 9223372036854775806) + 1
     WHERE id = (SELECT notification_id FROM dedup_keys
                 WHERE channel = $1 AND recipient = $2 AND dedup_key = $3)
     RETURNING id, state";

/// A digest item joins the digest open for its (channel, recipient, key), or opens one due at
/// the end of its window ([`crate::rules::digest`]): one upsert on the open-digest index, which
/// waits for a daemon claiming (closing) that digest at the same moment and then opens the
/// next. The item that fills it (`$8` items) closes it and makes it due now; the count stops
/// at the largest bigint, where another program may have stored it. Its id.
pub(super) const JOIN_DIGEST: &str =
    "INSERT INTO notifications AS n (id, channel, recipient, priority, run_at, created_at,
         updated_at, content_hash, checked, digest_key, digest_open, digest_items, recipient_key)
     VALUES ($1, $2, $3, $4, CASE WHEN $8 <= 1 THEN $6 ELSE $5 END, $6, $6, '', true, $7,
             CASE WHEN $8 <= 1 THEN NULL ELSE true END, 1, $9)
     ON CONFLICT (channel, recipient, digest_key) WHERE digest_open DO UPDATE
         SET digest_items = least(n.digest_items, 9223372036854775806) + 1,
             digest_open = CASE WHEN least(n.digest_items, 9223372036854775806) + 1 >= $8
                                THEN NULL ELSE true END,
             run_at = CASE WHEN least(n.digest_items, 9223372036854775806) + 1 >= $8
                           THEN least(n.run_at, $6) ELSE n.run_at END,
             updated_at = $6
     RETURNING id";

/// Makes a stored notification an item of digest `$2`: it waits, never due by itself, and
/// keeps its template variables.
pub(super) const COLLECT_ITEM: &str =
    "UPDATE notifications SET digest_id = $2, vars = $3::jsonb, run_at = $4 WHERE id = $1";

/// A digest ended: its waiting items end with it ([`crate::rules::digest::item_state`]).
pub(super) const END_DIGEST_ITEMS: &str = "UPDATE notifications
     SET state = $3, provider_id = $4, last_code = $5, last_error = $6, updated_at = $2
     WHERE digest_id = $1 AND state = 'queued'
     RETURNING id";

/// The items still waiting in a digest, oldest first.
pub(super) const DIGEST_ITEMS: &str = "SELECT id, subject, body, html, data, vars, created_at
     FROM notifications WHERE digest_id = $1 AND state = 'queued' ORDER BY created_at, id";

/// Dedup keys whose window is over, a bounded batch per sweep, oldest first.
pub(super) const PURGE_DEDUP_KEYS: &str = "DELETE FROM dedup_keys WHERE ctid IN (
         SELECT ctid FROM dedup_keys WHERE until_ms <= $1 ORDER BY until_ms LIMIT $2)";

/// The holders of several idempotency keys.
pub(super) const KEY_HOLDERS: &str = "SELECT idempotency_key, id, state, content_hash
     FROM notifications WHERE idempotency_key = ANY($1::text[])";

/// The holder of one idempotency key.
pub(super) const KEY_HOLDER: &str =
    "SELECT id, state, content_hash FROM notifications WHERE idempotency_key = $1";

/// The claim, as River and Oban do it: the CTE picks and locks at most `$5` due rows of the
/// channel in claim order, skipping rows another daemon is locking right now, and the UPDATE
/// changes exactly those (an `UPDATE … WHERE id IN (subquery LIMIT n)` may be re-evaluated and
/// touch more than n). Each claim raises the lease token. `due_at` is the row's due time before
/// the claim, to return rows in claim order (RETURNING has none). Each row comes with its
/// recipient's preferences (`preferences_read` when its `recipient_key` was written, so a
/// missing `recipients` row means none): the dispatcher's rules need them, and here they cost
/// no round trip of their own.
///
/// Each priority is sought on its own (`prio_rank = p.rank`): with the rank a range of the due
/// index, `run_at <= now` bounds the walk, where one scan ordered by rank would step over every
/// row of the channel scheduled for later (100,000 of them: 941 buffers and 4.6 ms a claim,
/// against 13 buffers and 0.05 ms so). A priority's rows the outer `LIMIT` leaves out stay
/// locked only until the statement ends.
pub(super) const CLAIM: &str = "WITH due AS (
         SELECT d.id, d.run_at, d.prio_rank
         FROM (VALUES (0::smallint), (1::smallint), (2::smallint)) AS p (rank)
         CROSS JOIN LATERAL (
             SELECT id, run_at, prio_rank FROM notifications
             WHERE channel = $4 AND prio_rank = p.rank AND state IN ('queued', 'sending')
               AND run_at <= $3
             ORDER BY run_at, id
             LIMIT $5
             FOR UPDATE SKIP LOCKED) AS d
         ORDER BY d.prio_rank, d.run_at, d.id
         LIMIT $5),
     claimed AS (
         UPDATE notifications n
         SET state = 'sending',
             attempts = CASE WHEN n.attempts BETWEEN 0 AND 4294967294 THEN n.attempts + 1
                             ELSE n.attempts END,
             lease = CASE WHEN n.lease BETWEEN 0 AND 9223372036854775806 THEN n.lease + 1
                          ELSE n.lease END,
             lease_owner = $1, run_at = $2, updated_at = $3, digest_open = NULL
         FROM due
         WHERE n.id = due.id
         RETURNING n.id, n.channel, n.recipient, n.subject, n.body, n.html, n.data,
                   n.created_at, n.attempts, n.expires_at, n.tried, due.prio_rank, n.checked,
                   CASE WHEN n.checked THEN NULL ELSE n.fallback END AS fallback, n.lease,
                   due.run_at AS due_at, n.deliver_between, n.digest_key,
                   n.escalate IS NOT NULL AND n.checked AS escalates, n.recipient_key)
     SELECT c.*, c.recipient_key IS NOT NULL AS preferences_read,
            r.preferences::text AS preferences
     FROM claimed c LEFT JOIN recipients r ON r.address = c.recipient_key";

/// Ends a claimed row that cannot be decoded (`dead`, `unreadable_row`), by id.
pub(super) const QUARANTINE: &str =
    "UPDATE notifications SET state = 'dead', last_code = 'unreadable_row', last_error = $2,
         lease_owner = NULL, updated_at = $3
     WHERE id = $1";

/// A batch of completions in one statement, columns as arrays (River's
/// `JobSetStateIfRunningMany` does the same): every attempt of `$13`–`$22` is recorded, with the
/// channel it was made on; each row change of `$1`–`$10` lands only while the completion's lease
/// (`$2`) is the row's current one, held by this daemon (`$11`), and the row still `sending`
/// (`$12` is now). The `change` column says which of the model's row changes it is: a delivery
/// sets (or clears) the provider id and the last error; a requeue sets `run_at`, gives back
/// `refund` attempts and sets the last error, unless it keeps it (a release); an end sets the
/// final state and error; a move fails over onto `channel`, adding the current one to `tried`,
/// with a fresh attempt count. A landed delivery attaches the receipts that arrived before its
/// provider id (of its own channel). A landed digest that was delivered or ended ends the items
/// waiting in it, each with its `digest` timeline line, as [`crate::rules::digest::ending`] and
/// [`crate::rules::digest::ended`] say (the contract suite checks both backends write the same).
/// One row per landed change (id, lease), with each early receipt it attached (NULL status when
/// none).
pub(super) const COMPLETE: &str = "WITH recorded AS (
         INSERT INTO attempts (notification_id, attempt, started_at, latency_ms, outcome, code,
                               error, provider_id, decision, channel)
         SELECT a.id, a.attempt, a.started_at, a.latency_ms, a.outcome, a.code, a.error,
                a.provider_id, a.decision, a.channel
         FROM unnest($13::text[], $14::int8[], $15::int8[], $16::int8[], $17::text[],
                     $18::text[], $19::text[], $20::text[], $21::text[], $22::text[])
              WITH ORDINALITY AS a(id, attempt, started_at, latency_ms, outcome, code, error,
                                   provider_id, decision, channel, ord)
         ORDER BY a.ord),
     changed AS (
         UPDATE notifications n
         SET state = c.state,
             provider_id = CASE WHEN c.change = 'deliver' THEN c.provider_id
                                ELSE n.provider_id END,
             run_at = coalesce(c.run_at, n.run_at),
             attempts = CASE WHEN c.change = 'move' THEN 0 ELSE n.attempts - c.refund END,
             tried = CASE WHEN c.change = 'move'
                          THEN coalesce(n.tried, '[]'::jsonb) || to_jsonb(n.channel)
                          ELSE n.tried END,
             channel = coalesce(c.channel, n.channel),
             last_code = CASE WHEN c.change = 'requeue_keeping_error' THEN n.last_code
                              ELSE c.code END,
             last_error = CASE WHEN c.change = 'requeue_keeping_error' THEN n.last_error
                               ELSE c.error END,
             lease_owner = NULL,
             updated_at = $12
         FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[],
                     $7::int8[], $8::text[], $9::text[], $10::text[])
              AS c(id, lease, change, state, provider_id, run_at, refund, code, error, channel)
         WHERE n.id = c.id AND n.lease = c.lease AND n.lease_owner = $11
           AND n.state = 'sending'
         RETURNING n.id, c.lease, c.change, n.provider_id, n.channel,
                   n.digest_key IS NOT NULL AS digest, c.state, c.code, c.error, n.attempts),
     digest_items AS (
         UPDATE notifications i
         SET state = CASE WHEN d.change = 'deliver' THEN 'delivered' ELSE 'failed' END,
             provider_id = d.provider_id,
             last_code = d.code,
             last_error = CASE WHEN d.change = 'deliver' THEN NULL
                               ELSE 'its digest ' || d.id || ' ended ' || d.state || ': '
                                    || d.error END,
             updated_at = $12
         FROM changed d
         WHERE d.digest AND d.change IN ('deliver', 'end') AND i.digest_id = d.id
           AND i.state = 'queued'
         RETURNING i.id, i.state, d.id AS digest_id, d.attempts),
     digest_events AS (
         INSERT INTO events (notification_id, at, rule, detail)
         SELECT id, $12, 'digest',
                state || ' with digest ' || digest_id || ' (its attempt ' || attempts || ')'
         FROM digest_items),
     early AS (
         UPDATE receipts r SET notification_id = d.id
         FROM changed d
         WHERE d.change = 'deliver' AND r.provider_id = d.provider_id
           AND r.notification_id IS NULL AND r.channel = d.channel
         RETURNING r.notification_id, r.status, r.provider_status, r.error_code)
     SELECT d.id, d.lease, e.status, e.provider_status, e.error_code
     FROM changed d LEFT JOIN early e ON e.notification_id = d.id";

pub(super) const FALLBACK_PARENT: &str =
    "SELECT fallback, subject, body, html, data, priority, expires_at, created_at
     FROM notifications WHERE id = $1";

/// What the next escalation step is made of: the steps left on the notification before it, the
/// chain's first notification (`root`) and its content (the notification's own if that one was
/// purged).
pub(super) const STEP_PARENT: &str = "SELECT n.escalate, coalesce(n.escalation_of, n.id) AS root,
         CASE WHEN r.id IS NULL THEN n.subject ELSE r.subject END AS subject,
         CASE WHEN r.id IS NULL THEN n.body ELSE r.body END AS body,
         CASE WHEN r.id IS NULL THEN n.html ELSE r.html END AS html,
         CASE WHEN r.id IS NULL THEN n.data ELSE r.data END AS data,
         n.priority, n.expires_at
     FROM notifications n LEFT JOIN notifications r ON r.id = coalesce(n.escalation_of, n.id)
     WHERE n.id = $1";
/// Whether a chain was acknowledged, read under its first row's lock (an acknowledgement
/// holds it while it marks the chain).
pub(super) const CHAIN_ACKED_FOR_UPDATE: &str =
    "SELECT acked_at FROM notifications WHERE id = $1 FOR UPDATE";
/// When a chain was acknowledged.
pub(super) const CHAIN_ACKED: &str = "SELECT acked_at FROM notifications WHERE id = $1";
/// What an acknowledgement needs of the notification it names.
pub(super) const ACK_TARGET: &str = "SELECT coalesce(n.escalation_of, n.id),
         n.escalate IS NOT NULL OR n.escalation_of IS NOT NULL,
         (SELECT r.acked_at FROM notifications r WHERE r.id = coalesce(n.escalation_of, n.id))
     FROM notifications n WHERE n.id = $1";
/// Marks a chain acknowledged, once.
pub(super) const MARK_ACKED: &str =
    "UPDATE notifications SET acked_at = $2, updated_at = $2 WHERE id = $1 AND acked_at IS NULL";
/// Cancels the chain's steps waiting in the queue; a step a claim is locking is being sent.
pub(super) const CANCEL_WAITING_STEPS: &str = "UPDATE notifications
     SET state = 'cancelled', last_code = $3, last_error = $4, updated_at = $2
     WHERE escalation_of = $1 AND state = 'queued'";

/// A row whose fallback routes cannot be read ends dead, saying how it had ended.
pub(super) const END_UNREADABLE: &str = "UPDATE notifications SET state = 'dead', last_code = $2,
         last_error = $3 || '; its fallback was not queued after it ended ' || state || ' ('
             || coalesce(last_code, '') || ': ' || coalesce(last_error, '') || ')',
         lease_owner = NULL, updated_at = $4
     WHERE id = $1";

pub(super) const CANCEL: &str = "UPDATE notifications SET state = $4, updated_at = $2
     WHERE id = $1 AND state = $3";
pub(super) const REPLAY: &str = "UPDATE notifications SET state = $4, attempts = 0, run_at = $2,
         lease_owner = NULL, updated_at = $2
     WHERE id = $1 AND state = $3";
pub(super) const STATE: &str = "SELECT state FROM notifications WHERE id = $1";

pub(super) const DEFER_DUE: &str =
    "UPDATE notifications SET run_at = $3, last_code = $5, last_error = $6, updated_at = $2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = $1 AND state IN ('queued', 'sending') AND state = 'queued'
                    AND run_at <= $2
                  ORDER BY prio_rank, run_at, id LIMIT $4
                  FOR UPDATE SKIP LOCKED)";

pub(super) const REROUTE_DUE: &str =
    "UPDATE notifications SET tried = coalesce(tried, '[]'::jsonb) || to_jsonb(channel),
         channel = $3, run_at = $2, attempts = 0, last_code = $5, last_error = $6, updated_at = $2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = $1 AND state IN ('queued', 'sending') AND state = 'queued'
                    AND run_at <= $2
                    AND NOT coalesce(tried, '[]'::jsonb) @> jsonb_build_array($3::text)
                  ORDER BY prio_rank, run_at, id LIMIT $4
                  FOR UPDATE SKIP LOCKED)";

pub(super) const RECEIPT_TARGET: &str =
    "SELECT id FROM notifications WHERE provider_id = $1 AND channel = $2 LIMIT 1";

pub(super) const INSERT_RECEIPT: &str = "INSERT INTO receipts (channel, provider_id, status,
         provider_status, error_code, received_at, notification_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (channel, provider_id, provider_status) DO NOTHING";

pub(super) const FAIL_BY_RECEIPT: &str =
    "UPDATE notifications SET state = $6, last_code = $2, last_error = $3, updated_at = $4
     WHERE id = $1 AND state = $5";

pub(super) const EXPIRE_OVERDUE: &str =
    "UPDATE notifications SET state = 'expired', last_code = $2, last_error = $3, updated_at = $1
     WHERE id IN (SELECT id FROM notifications
                  WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= $1
                  LIMIT $4 FOR UPDATE SKIP LOCKED)
     RETURNING id, channel";

pub(super) const LIVE_CHANNELS: &str =
    "SELECT DISTINCT channel FROM notifications WHERE state IN ('queued', 'sending')";

pub(super) const DEAD_LETTER_ORPHANS: &str =
    "UPDATE notifications SET state = 'dead', last_code = $3, last_error = $4, lease_owner = NULL,
         updated_at = $2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = $1 AND state IN ('queued', 'sending')
                    AND (state = 'queued' OR run_at <= $2)
                  LIMIT $5 FOR UPDATE SKIP LOCKED)";

/// One retention batch in one statement: the oldest finished notifications (at most `$2`), with
/// their attempts and receipts.
pub(super) const PURGE_FINISHED: &str = "WITH old AS (
         SELECT id FROM notifications
         WHERE state IN ('delivered', 'failed', 'expired', 'cancelled') AND updated_at < $1
         ORDER BY updated_at LIMIT $2
         FOR UPDATE SKIP LOCKED),
     gone_attempts AS (DELETE FROM attempts WHERE notification_id IN (SELECT id FROM old)),
     gone_receipts AS (DELETE FROM receipts WHERE notification_id IN (SELECT id FROM old)),
     gone_events AS (DELETE FROM events WHERE notification_id IN (SELECT id FROM old))
     DELETE FROM notifications WHERE id IN (SELECT id FROM old)";

pub(super) const PURGE_UNMATCHED_RECEIPTS: &str = "DELETE FROM receipts WHERE id IN (
         SELECT id FROM receipts WHERE notification_id IS NULL AND received_at < $1
         LIMIT $2 FOR UPDATE SKIP LOCKED)";

pub(super) const GET: &str = "SELECT id, channel, recipient, state, priority, attempts, created_at,
         run_at, expires_at, provider_id, last_code, last_error, parent_id, fallback, source,
         duplicates, digest_id, digest_key
     FROM notifications WHERE id = $1";

/// What a notification says.
pub(super) const CONTENT: &str =
    "SELECT subject, body, html, data FROM notifications WHERE id = $1";

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
pub(super) const HISTORY: &str =
    "SELECT id, channel, recipient, state, priority, attempts, subject,
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

pub(super) const ATTEMPTS: &str = "SELECT attempt, started_at, latency_ms, outcome, code, error,
         provider_id, decision, channel
     FROM attempts WHERE notification_id = $1 ORDER BY attempt, seq";

pub(super) const RECEIPTS: &str =
    "SELECT status, provider_status, error_code, received_at FROM receipts
     WHERE notification_id = $1 ORDER BY received_at, id";

pub(super) const EVENTS: &str = "SELECT at, rule, detail FROM events
     WHERE notification_id = $1 ORDER BY at, seq";

/// One line of a notification's timeline: what a delivery rule did.
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO events (notification_id, at, rule, detail) VALUES ($1, $2, $3, $4)";

pub(super) const DEAD_LETTERS: &str =
    "SELECT id, channel, recipient, attempts, last_code, last_error,
         updated_at
     FROM notifications
     WHERE state = 'dead' AND ($1::text IS NULL OR channel = $1)
     ORDER BY updated_at DESC LIMIT $2";

pub(super) const DEPTH: &str = "SELECT channel, state, count(*) FROM notifications
     WHERE state IN ('queued', 'sending', 'dead') GROUP BY channel, state";

/// Per channel, the oldest due time: for each priority one seek of the due index.
pub(super) const OLDEST_DUE: &str = "SELECT c, min(d.run_at) FROM unnest($1::text[]) AS c
     CROSS JOIN generate_series(0, 2) AS r
     CROSS JOIN LATERAL (
         SELECT run_at FROM notifications
         WHERE channel = c AND state IN ('queued', 'sending') AND prio_rank = r::smallint
           AND run_at <= $2
         ORDER BY run_at LIMIT 1) AS d
     GROUP BY c";

/// A primary can take writes; a standby (or a server recovering) cannot.
pub(super) const WRITABLE: &str = "SELECT NOT pg_is_in_recovery()";

/// [`LEAD`]'s text, which [`LEAD_UPKEEP`] embeds.
macro_rules! lead {
    () => {
        "INSERT INTO leaders (task, owner, until) VALUES ($1, $2, $3)
         ON CONFLICT (task) DO UPDATE SET owner = excluded.owner, until = excluded.until
         WHERE leaders.owner = excluded.owner OR leaders.until <= $4
         RETURNING owner"
    };
}
/// Takes or keeps the lead of task `$1` for daemon `$2` until `$3`: granted when nobody leads
/// it, this daemon already does, or the last leader's term ended (`$4` is now). Returns a row
/// only when granted.
pub(super) const LEAD: &str = lead!();

/// [`LEAD`] for the upkeep, and, when this daemon has it, what the server's statistics say of
/// `notifications` ([`super::upkeep::Churn`]), in one round trip.
pub(super) const LEAD_UPKEEP: &str = concat!(
    "WITH lead AS (",
    lead!(),
    ")
     SELECT s.n_dead_tup, s.n_live_tup, s.n_mod_since_analyze
     FROM lead, pg_stat_user_tables s
     WHERE s.relid = 'notifications'::regclass"
);

/// One wake-up hint per channel given (`$1` is the schema's wake-up channel): delivered to every
/// listening daemon when the transaction commits.
pub(super) const NOTIFY: &str = "SELECT pg_notify($1, c) FROM unnest($2::text[]) AS c";

/// One reservation of a shared rate-limit bucket, the rule of
/// [`crate::policy::rate_limit::reserve`] in one statement: `$1` channel, `$2` recipient (`''`
/// for the channel's own bucket), `$3` now, `$5` within, `$6` interval, `$7` tolerance (µs);
/// `$4` tokens wanted. A new row is a full bucket (its arrival time was now). The row lock
/// serialises daemons reserving from one bucket; RETURNING says how many were granted and the
/// arrival time after them.
pub(super) const RESERVE_TOKENS: &str =
    "INSERT INTO rate_limits AS b (channel, recipient, tat_us, granted)
     SELECT $1, $2, $3 + g * $6, g
     FROM (SELECT LEAST($4, ($5 + $7) / $6 + 1) AS g) AS fresh
     ON CONFLICT (channel, recipient) DO UPDATE
     SET (tat_us, granted) = (
         SELECT base + g * $6, g
         FROM (SELECT base, CASE WHEN base > $3 + $5 + $7 THEN 0
                                 ELSE LEAST($4, ($3 + $5 + $7 - base) / $6 + 1) END AS g
               FROM (SELECT GREATEST(b.tat_us, $3) AS base) AS t) AS u)
     RETURNING tat_us, granted";

/// Forgets up to `$2` buckets whose arrival time is before `$1` (µs): they are full again, so a
/// new row would be the same. The outer condition is checked again on a row a reservation
/// changed meanwhile, which is then kept.
pub(super) const PRUNE_RATE_LIMITS: &str = "DELETE FROM rate_limits
     WHERE (channel, recipient) IN (
         SELECT channel, recipient FROM rate_limits WHERE tat_us < $1 LIMIT $2)
       AND tat_us < $1";

/// Holds channel `$1` until `$2` (ms) because `$3`, unless a longer hold is in force.
pub(super) const HOLD_CHANNEL: &str = "INSERT INTO channel_holds (channel, until_ms, because)
     VALUES ($1, $2, $3)
     ON CONFLICT (channel) DO UPDATE SET until_ms = excluded.until_ms, because = excluded.because
     WHERE channel_holds.until_ms < excluded.until_ms";

/// The holds in force at `$1` (ms).
pub(super) const HOLDS_IN_FORCE: &str =
    "SELECT channel, until_ms, because FROM channel_holds WHERE until_ms > $1";

/// Forgets the holds that ended before `$1` (ms).
pub(super) const PRUNE_HOLDS: &str = "DELETE FROM channel_holds WHERE until_ms <= $1";
/// Serialises migrations through PgBouncer: a lock held until the migrating transaction ends.
pub(super) const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;
    use crate::outbox::postgres::test_queue::TestQueue;

    /// The claim's plan on a channel with 20,000 rows scheduled for later and two due: each
    /// priority's due rows are one range of the due index, bounded by the due time.
    #[tokio::test]
    async fn the_claim_seeks_each_prioritys_due_rows() {
        let Some(queue) = TestQueue::open().await else {
            return;
        };
        let pool = &queue.outbox.pool;
        for statement in [
            "INSERT INTO notifications (id, channel, recipient, body, priority, run_at, checked)
             SELECT md5(i::text), 'c', 'ops@example.com', 'b',
                 CASE WHEN i % 2 = 0 THEN 'high' ELSE 'normal' END,
                 CASE WHEN i <= 2 THEN 1000 ELSE 4000000000000 + i END, true
             FROM generate_series(1, 20000) AS i",
            "ANALYZE notifications",
        ] {
            sqlx::query(statement).execute(pool).await.unwrap();
        }
        let plan: Vec<String> =
            sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN (COSTS OFF) {CLAIM}")))
                .bind("owner")
                .bind(2_000_i64)
                .bind(1_000_i64)
                .bind("c")
                .bind(25_i64)
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
        let plan = plan.join("\n");
        let seeks = plan.lines().any(|line| {
            line.contains("Index Cond:")
                && line.contains("prio_rank = \"*VALUES*\".column1")
                && line.contains("run_at <=")
        });
        assert!(seeks, "{plan}");
        assert!(plan.contains("using notifications_due"), "{plan}");
    }
}
