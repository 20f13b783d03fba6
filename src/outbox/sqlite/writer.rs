//! The single writer: every write to the queue file goes through this thread, batched.
//!
//! It blocks for the first request, takes every other request already waiting, runs them all in
//! one `BEGIN IMMEDIATE` transaction, takes in those that arrived meanwhile, and commits once.
//! One bad request cannot spoil the others: if one fails, the batch is rolled back and run again
//! with each request in its own savepoint (savepoints on every batch cost SQLite a copy of each
//! page a request touches). Callers are answered only after the commit: that is what makes
//! "accepted" durable, and sharing the fsync is what makes it fast. No timer sizes a batch:
//! under load, requests pile up while the previous commit syncs, and the batch grows by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::super::completion::{FollowUp, RowChange};
use super::super::fallback::FallbackParent;
use super::super::sweep::PURGE_BATCH;
use super::super::*;
use super::durability::{Durability, Sync};
use super::stored;
use crate::rules::escalation::{self, AckPlan, AckTarget, StepParent, StepTrigger};

/// Requests waiting for the writer before senders are made to wait.
const QUEUE: usize = 8192;
/// Requests folded into one transaction at most.
const MAX_BATCH: usize = 4096;

/// Leases the next due rows of a channel: walks `notifications_due` in priority, then due
/// order (a test checks the plan). `prio_rank IN (0, 1, 2)` is what lets it seek to the due
/// rows of each priority instead of stepping over every scheduled one (8.9 ms a claim behind
/// 100,000 rows scheduled for later, against 0.01 ms). The rows are picked by `rowid`, which
/// the index holds: the walk reads no table row and the update finds each row without a second
/// index (by `id` it took two more b-tree seeks a row). RETURNING comes in the update's own
/// order (by rowid), so the rows are sorted by `prio_rank`, then `id` afterwards.
///
/// Nothing a row holds may fail the statement (that would fail the claim of every row of the
/// channel): an `attempts` outside the daemon's range is left as it is, not incremented into an
/// overflow, and so is a `lease` the claim cannot raise (the token that fences completions:
/// `lease + 1` past `i64::MAX` is a REAL, which the STRICT column refuses); the row is
/// quarantined when it is decoded. `rowid` identifies a row whatever
/// its `id` holds; `fallback` comes back only for rows still to be validated.
pub(super) const CLAIM: &str = "UPDATE notifications
     SET state = 'sending',
         attempts = CASE WHEN attempts BETWEEN 0 AND 4294967294 THEN attempts + 1
                         ELSE attempts END,
         lease = CASE WHEN lease BETWEEN 0 AND 9223372036854775806 THEN lease + 1 ELSE lease END,
         lease_owner = ?1, run_at = ?2, updated_at = ?3, digest_open = NULL
     WHERE rowid IN (
         SELECT rowid FROM notifications
         WHERE channel = ?4 AND state IN ('queued', 'sending') AND prio_rank IN (0, 1, 2)
           AND run_at <= ?3
         ORDER BY prio_rank, run_at
         LIMIT ?5)
     RETURNING rowid, id, channel, recipient, subject, body, html, data, created_at, attempts,
               expires_at, tried, prio_rank, checked,
               CASE WHEN checked = 1 THEN NULL ELSE fallback END, lease, deliver_between, digest_key";

/// Moves a row that cannot be decoded out of the claim path: `dead` (listed, replayable) with
/// the decode error as its reason. By `rowid`, which is readable whatever the row's `id` holds.
const QUARANTINE: &str =
    "UPDATE notifications SET state = 'dead', last_code = 'unreadable_row', last_error = ?2,
         lease_owner = NULL, updated_at = ?3
     WHERE rowid = ?1";

/// Due, queued rows of a channel whose breaker is open, pushed to its next probe. Its terms are
/// the claim's, so it seeks in `notifications_due` like the claim (a test checks the plan).
pub(super) const DEFER_DUE: &str =
    "UPDATE notifications SET run_at = ?3, last_code = ?5, last_error = ?6, updated_at = ?2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = ?1 AND state IN ('queued', 'sending') AND prio_rank IN (0, 1, 2)
                    AND run_at <= ?2 AND state = 'queued'
                  ORDER BY prio_rank, run_at LIMIT ?4)";

/// Due, queued rows of a channel whose breaker is open, moved to a failover channel they have
/// not been on yet; seeks like [`DEFER_DUE`].
pub(super) const REROUTE_DUE: &str =
    "UPDATE notifications SET tried = json_insert(coalesce(tried, '[]'), '$[#]', channel),
         channel = ?3, run_at = ?2, attempts = 0, last_code = ?5, last_error = ?6, updated_at = ?2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = ?1 AND state IN ('queued', 'sending') AND prio_rank IN (0, 1, 2)
                    AND run_at <= ?2 AND state = 'queued'
                    AND NOT EXISTS (SELECT 1 FROM json_each(coalesce(tried, '[]'))
                                    WHERE value = ?3)
                  ORDER BY prio_rank, run_at LIMIT ?4)";

/// The oldest finished rows ([`sweep::may_purge`]), for retention. Its state test is the
/// `notifications_finished` index's own expression (0005), so it walks that index (a test checks
/// the plan, another that it selects exactly the states the rule names).
macro_rules! old_finished {
    () => {
        "SELECT id FROM notifications
         WHERE (state IN ('delivered', 'failed') OR state IN ('expired', 'cancelled'))
             AND updated_at < ?1
         ORDER BY updated_at LIMIT ?2"
    };
}
#[cfg(test)]
pub(super) const OLD_FINISHED: &str = old_finished!();
/// Retention, child rows first: the attempts and receipts of the oldest finished rows.
const PURGE_ATTEMPTS: &str = concat!(
    "DELETE FROM attempts WHERE notification_id IN (",
    old_finished!(),
    ")"
);
const PURGE_RECEIPTS: &str = concat!(
    "DELETE FROM receipts WHERE notification_id IN (",
    old_finished!(),
    ")"
);
const PURGE_EVENTS: &str = concat!(
    "DELETE FROM events WHERE notification_id IN (",
    old_finished!(),
    ")"
);
/// Retention: the oldest finished rows themselves.
const PURGE_FINISHED: &str = concat!(
    "DELETE FROM notifications WHERE id IN (",
    old_finished!(),
    ")"
);
/// Retention: receipts that never matched a notification.
const PURGE_UNMATCHED_RECEIPTS: &str = "DELETE FROM receipts WHERE id IN (SELECT id FROM receipts
     WHERE notification_id IS NULL AND received_at < ?1 LIMIT ?2)";

/// The notification a receipt refers to: walks `notifications_by_provider_id`.
pub(super) const RECEIPT_TARGET: &str =
    "SELECT id FROM notifications WHERE provider_id = ?1 AND channel = ?2 LIMIT 1";

/// Receipts that arrived before their notification's provider id, found by index.
pub(super) const EARLY_RECEIPTS: &str = "UPDATE receipts SET notification_id = ?1
     WHERE provider_id = ?2 AND notification_id IS NULL
       AND channel = (SELECT channel FROM notifications WHERE id = ?1)
     RETURNING status, provider_status, error_code";

/// A receipt that fails a delivered notification ([`receipt::RECEIPT_FAILS`]).
const FAIL_BY_RECEIPT: &str =
    "UPDATE notifications SET state = ?6, last_code = ?2, last_error = ?3,
         updated_at = ?4
     WHERE id = ?1 AND state = ?5";

/// Queued rows past their `expires_at`, in bounded batches: walks `notifications_expiring`.
/// Its terms are [`sweep::expires`].
pub(super) const EXPIRE_OVERDUE: &str =
    "UPDATE notifications SET state = 'expired', last_code = ?2, last_error = ?3, updated_at = ?1
     WHERE id IN (SELECT id FROM notifications
                  WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= ?1
                  LIMIT ?4)
     RETURNING id, channel";

/// Live rows of a channel that is not configured, dead-lettered: [`sweep::orphaned`]. The
/// claim's literal terms let it seek the channel in `notifications_due` instead of scanning the
/// table (a test checks the plan).
pub(super) const DEAD_LETTER_ORPHANS: &str =
    "UPDATE notifications SET state = 'dead', last_code = ?3, last_error = ?4, lease_owner = NULL,
         updated_at = ?2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = ?1 AND state IN ('queued', 'sending') AND prio_rank IN (0, 1, 2)
                    AND (state = 'queued' OR run_at <= ?2)
                  LIMIT ?5)";

/// [`DEAD_LETTER_ORPHANS`] for a channel name that is not UTF-8 text (another program's row):
/// matched as bytes. Rare, so it may scan.
const DEAD_LETTER_UNNAMED_ORPHANS: &str =
    "UPDATE notifications SET state = 'dead', last_code = ?3, last_error = ?4, lease_owner = NULL,
         updated_at = ?2
     WHERE id IN (SELECT id FROM notifications
                  WHERE CAST(channel AS BLOB) = ?1
                    AND (state = 'queued' OR (state = 'sending' AND run_at <= ?2))
                  LIMIT ?5)";

/// The channels that have live rows, for the orphan sweep.
const LIVE_CHANNELS: &str =
    "SELECT DISTINCT channel FROM notifications WHERE state IN ('queued', 'sending')";

/// Completions: each [`RowChange`] is one fixed statement, fenced so that only the holder of
/// the row's current lease ([`LeaseToken`]) moves it on. The owner check adds nothing a token
/// does not already say, and costs nothing: it stays as a second guard.
///
/// Each change comes as a pair. The plain statement lands only on a row that is neither a digest
/// nor has escalation steps (rows notifyd wrote only: plain-SQL rows do not escalate), which is
/// nearly every row, and returns nothing: `changes()` says whether it landed. When it did not,
/// the flagged statement (the same change, on any row) runs and returns a row only when the
/// change landed, saying which follow-ups the row needs. RETURNING costs SQLite an ephemeral
/// table per statement (a b-tree and a pager opened, a page zeroed, closed again): without it
/// the writer's work per delivered notification fell by a sixth (measured with callgrind,
/// 122,800 to 103,500 instructions), so the common case does without it; a stale completion
/// costs a second point lookup, which finds nothing either.
macro_rules! fenced {
    ($name:ident, $flagged:ident, $set:literal) => {
        pub(super) const $name: &str = concat!(
            "UPDATE notifications SET ",
            $set,
            " WHERE id = ?1 AND lease = ?2 AND lease_owner = ?3 AND state = 'sending'",
            " AND digest_key IS NULL AND NOT (escalate IS NOT NULL AND checked = 1)"
        );
        pub(super) const $flagged: &str = concat!(
            "UPDATE notifications SET ",
            $set,
            " WHERE id = ?1 AND lease = ?2 AND lease_owner = ?3 AND state = 'sending'",
            " RETURNING digest_key IS NOT NULL, escalate IS NOT NULL AND checked = 1"
        );
    };
}
fenced!(
    DELIVER,
    DELIVER_FLAGGED,
    "state = 'delivered', provider_id = ?4, lease_owner = NULL, last_code = NULL,
     last_error = NULL, updated_at = ?5"
);
// A requeue with its error (a retry).
fenced!(
    REQUEUE,
    REQUEUE_FLAGGED,
    "state = 'queued', run_at = ?4, attempts = attempts - ?5, lease_owner = NULL,
     last_code = ?6, last_error = ?7, updated_at = ?8"
);
// A requeue that keeps the last error (a release).
fenced!(
    REQUEUE_KEEPING_ERROR,
    REQUEUE_KEEPING_ERROR_FLAGGED,
    "state = 'queued', run_at = ?4, attempts = attempts - ?5, lease_owner = NULL,
     updated_at = ?6"
);
fenced!(
    END,
    END_FLAGGED,
    "state = ?4, lease_owner = NULL, last_code = ?5, last_error = ?6, updated_at = ?7"
);
fenced!(
    MOVE,
    MOVE_FLAGGED,
    "tried = json_insert(coalesce(tried, '[]'), '$[#]', channel), channel = ?4, state = 'queued',
     attempts = 0, run_at = ?5, lease_owner = NULL, last_code = ?6, last_error = ?7,
     updated_at = ?8"
);

/// One attempt's history row, with the channel the attempt was made on (the completion's).
const RECORD_ATTEMPT: &str = "INSERT INTO attempts (notification_id, attempt, started_at,
         latency_ms, outcome, code, error, provider_id, decision, channel)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/// One line of a notification's timeline: what a delivery rule did.
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO events (notification_id, at, rule, detail) VALUES (?1, ?2, ?3, ?4)";
/// What a fallback child is made of ([`FallbackParent`]).
const FALLBACK_PARENT: &str =
    "SELECT fallback, subject, body, html, data, priority, expires_at, created_at
     FROM notifications WHERE id = ?1";

/// What the next escalation step is made of ([`StepParent`]): the steps left on the notification
/// before it, the chain's first notification's content (the notification's own if that one was
/// purged), and whether the chain was acknowledged.
const STEP_PARENT: &str = "SELECT n.escalate, coalesce(n.escalation_of, n.id),
         CASE WHEN r.id IS NULL THEN n.subject ELSE r.subject END,
         CASE WHEN r.id IS NULL THEN n.body ELSE r.body END,
         CASE WHEN r.id IS NULL THEN n.html ELSE r.html END,
         CASE WHEN r.id IS NULL THEN n.data ELSE r.data END,
         n.priority, n.expires_at, r.acked_at
     FROM notifications n LEFT JOIN notifications r ON r.id = coalesce(n.escalation_of, n.id)
     WHERE n.id = ?1";

/// What an acknowledgement needs of the notification it names ([`AckTarget`]).
const ACK_TARGET: &str = "SELECT coalesce(n.escalation_of, n.id),
         n.escalate IS NOT NULL OR n.escalation_of IS NOT NULL,
         (SELECT r.acked_at FROM notifications r WHERE r.id = coalesce(n.escalation_of, n.id))
     FROM notifications n WHERE n.id = ?1";
/// Marks a chain acknowledged, once.
pub(super) const MARK_ACKED: &str =
    "UPDATE notifications SET acked_at = ?2, updated_at = ?2 WHERE id = ?1 AND acked_at IS NULL";
/// Cancels the chain's steps waiting in the queue (`notifications_escalation_waiting`). A step
/// already claimed is being sent; it queues no further step.
pub(super) const CANCEL_WAITING_STEPS: &str = "UPDATE notifications
     SET state = 'cancelled', last_code = ?3, last_error = ?4, updated_at = ?2
     WHERE escalation_of = ?1 AND state = 'queued'";

/// A fallback parent whose stored columns cannot be read back ends as a dead letter
/// ([`Reason::UNREADABLE_ROW`]), its reason keeping how it had ended.
const END_UNREADABLE: &str = "UPDATE notifications SET state = 'dead', last_code = ?2,
         last_error = ?3 || '; its fallback was not queued after it ended ' || state || ' ('
             || coalesce(last_code, '') || ': ' || coalesce(last_error, '') || ')',
         lease_owner = NULL, updated_at = ?4
     WHERE id = ?1";

/// [`transition::Request::Cancel`]: the states are the request's.
const CANCEL: &str = "UPDATE notifications SET state = ?4, updated_at = ?2
     WHERE id = ?1 AND state = ?3";
/// [`transition::Request::Replay`]: due now, attempts from zero, no holder; `lease` is kept.
const REPLAY: &str = "UPDATE notifications SET state = ?4, attempts = 0, run_at = ?2,
         lease_owner = NULL, updated_at = ?2
     WHERE id = ?1 AND state = ?3";

/// Takes a dedup key for a notification: a new key, or one whose window is over
/// ([`crate::rules::dedup::holds`] no longer). Returns the id only when
/// the key is now the caller's; a key still held returns no row.
pub(super) const TAKE_DEDUP_KEY: &str =
    "INSERT INTO dedup_keys (channel, recipient, dedup_key, notification_id, until_ms)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (channel, recipient, dedup_key) DO UPDATE
         SET notification_id = excluded.notification_id, until_ms = excluded.until_ms
         WHERE dedup_keys.until_ms <= ?6
     RETURNING notification_id";

/// Gives a dedup key whose holder is gone (purged by retention while its window ran) to a new
/// holder, after [`COUNT_DUPLICATE`] found no holder.
const TAKE_ORPHANED_DEDUP_KEY: &str = "UPDATE dedup_keys SET notification_id = ?4, until_ms = ?5
     WHERE channel = ?1 AND recipient = ?2 AND dedup_key = ?3";

/// Counts one more duplicate on the holder of a dedup key; its id and state. The count stops
/// at the largest integer (SQLite would make `+ 1` a REAL, which the STRICT column refuses):
/// another program may have stored it there, and a duplicate must still be answered.
pub(super) const COUNT_DUPLICATE: &str = "UPDATE notifications
     SET duplicates = min(duplicates, 9223372036854775806) + 1
     WHERE id = (SELECT notification_id FROM dedup_keys
                 WHERE channel = ?1 AND recipient = ?2 AND dedup_key = ?3)
     RETURNING id, state";

/// A digest item joins the digest open for its (channel, recipient, key), or opens one due at
/// the end of its window ([`crate::rules::digest`]): one upsert on the open-digest index, so
/// an item never sees a digest half opened. The item that fills it (`?8` items) closes it and
/// makes it due now; the count stops at the largest integer, where another program may have
/// stored it. Returns the digest's id.
pub(super) const JOIN_DIGEST: &str =
    "INSERT INTO notifications (id, channel, recipient, priority, run_at, created_at, updated_at,
         content_hash, checked, digest_key, digest_open, digest_items)
     VALUES (?1, ?2, ?3, ?4, CASE WHEN ?8 <= 1 THEN ?6 ELSE ?5 END, ?6, ?6, '', 1, ?7,
             CASE WHEN ?8 <= 1 THEN NULL ELSE 1 END, 1)
     ON CONFLICT (channel, recipient, digest_key) WHERE digest_open = 1 DO UPDATE
         SET digest_items = min(notifications.digest_items, 9223372036854775806) + 1,
             digest_open = CASE WHEN min(notifications.digest_items, 9223372036854775806) + 1
                                     >= ?8 THEN NULL ELSE 1 END,
             run_at = CASE WHEN min(notifications.digest_items, 9223372036854775806) + 1 >= ?8
                           THEN min(notifications.run_at, ?6) ELSE notifications.run_at END,
             updated_at = ?6
     RETURNING id";

/// Makes a stored notification an item of digest `?2`: it waits, never due by itself
/// (`run_at` is the last time the daemon knows), and keeps its template variables.
const COLLECT_ITEM: &str =
    "UPDATE notifications SET digest_id = ?2, vars = ?3, run_at = ?4 WHERE id = ?1";

/// A digest ended: its waiting items end with it ([`crate::rules::digest::item_state`]).
const END_DIGEST_ITEMS: &str = "UPDATE notifications
     SET state = ?3, provider_id = ?4, last_code = ?5, last_error = ?6, updated_at = ?2
     WHERE digest_id = ?1 AND state = 'queued'
     RETURNING id";

/// Dedup keys whose window is over, a bounded batch per sweep, oldest first (walks
/// `dedup_keys_until`).
pub(super) const PURGE_DEDUP_KEYS: &str =
    "DELETE FROM dedup_keys WHERE (channel, recipient, dedup_key) IN (
         SELECT channel, recipient, dedup_key FROM dedup_keys WHERE until_ms <= ?1
         ORDER BY until_ms LIMIT ?2)";

impl Op {
    /// Whether the caller may hear of this write only once it is on disk: everything but the
    /// dispatcher's claims and completions ([`super::durability`]).
    fn must_be_synced(&self) -> bool {
        !matches!(self, Op::Claim { .. } | Op::Complete { .. })
    }

    /// Whether this request may join a batch that is already running under `sync`: any may
    /// join a synced one, only claims and completions a deferred one.
    fn may_join(&self, sync: Sync) -> bool {
        sync == Sync::Now || !self.must_be_synced()
    }
}

/// A write request.
pub(super) enum Op {
    Enqueue {
        items: Vec<NewNotification>,
        reply: oneshot::Sender<Result<Vec<Enqueued>>>,
    },
    Claim {
        channel: String,
        limit: usize,
        lease_ms: i64,
        reply: oneshot::Sender<Result<Vec<Claimed>>>,
    },
    Complete {
        completions: Vec<Completion>,
        reply: oneshot::Sender<Result<()>>,
    },
    Cancel {
        id: String,
        reply: oneshot::Sender<Result<Transition>>,
    },
    Replay {
        id: String,
        reply: oneshot::Sender<Result<Transition>>,
    },
    Sweep {
        known: Vec<String>,
        retention: Retention,
        reply: oneshot::Sender<Result<SweepReport>>,
    },
    Receipt {
        receipt: InboundReceipt,
        reply: oneshot::Sender<Result<RecordedReceipt>>,
    },
    /// One more retention batch, when the sweep's came back full.
    Purge {
        retention: Retention,
        reply: oneshot::Sender<Result<Purged>>,
    },
    MoveDue {
        channel: String,
        how: OpenBreakerMove,
        limit: usize,
        reply: oneshot::Sender<Result<u64>>,
    },
    RecordEvents {
        events: Vec<RuleEvent>,
        reply: oneshot::Sender<Result<()>>,
    },
    Ping {
        reply: oneshot::Sender<Result<()>>,
    },
    PutPreferences {
        address: String,
        prefs: crate::recipients::Preferences,
        reply: oneshot::Sender<Result<()>>,
    },
    DeletePreferences {
        address: String,
        reply: oneshot::Sender<Result<bool>>,
    },
    OptOut {
        address: String,
        channel: String,
        because: Option<RuleEvent>,
        reply: oneshot::Sender<Result<crate::recipients::Preferences>>,
    },
    Acknowledge {
        id: String,
        source: AckSource,
        reply: oneshot::Sender<Result<Acknowledged>>,
    },
}

/// The statements a batch of completions runs for every row, each taken from rusqlite's
/// statement cache once per batch and kept until the batch is written. A cache lookup hashes
/// and compares the whole SQL text, and giving the statement back re-inserts it: three of
/// those per row cost about 5,000 instructions (measured), for statements that stay the same
/// for the whole batch.
struct Statements<'c> {
    conn: &'c Connection,
    held: Vec<(&'static str, rusqlite::CachedStatement<'c>)>,
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            held: Vec::new(),
        }
    }

    /// The prepared statement for `sql`, from the cache the first time in this batch.
    fn get(&mut self, sql: &'static str) -> rusqlite::Result<&mut rusqlite::CachedStatement<'c>> {
        let at = match self.held.iter().position(|(held, _)| *held == sql) {
            Some(at) => at,
            None => {
                self.held.push((sql, self.conn.prepare_cached(sql)?));
                self.held.len() - 1
            }
        };
        Ok(&mut self.held[at].1)
    }
}

/// What a completion that landed tells its follow-ups about the row.
struct Landed {
    /// The row is a digest: its items end with it.
    digest: bool,
    /// The row has escalation steps to queue (rows notifyd wrote only).
    escalates: bool,
}

/// Sends a request's answer once the fate of its transaction is known.
type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A request's result, waiting for the request itself (which holds the reply) to make its
/// [`Answer`].
type Ran = Box<dyn FnOnce(Op) -> Answer + Send>;

fn answer<T: Send + 'static>(reply: oneshot::Sender<Result<T>>, result: Result<T>) -> Answer {
    Box::new(move |commit_error| {
        let _ = reply.send(match commit_error {
            Some(e) => Err(e.clone()),
            None => result,
        });
    })
}

/// Starts the writer thread; it ends when every sender is dropped, after the last batch.
pub(super) fn spawn(
    conn: Connection,
    owner: String,
    counts: Counts,
    clock: Clock,
) -> Result<mpsc::Sender<Op>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    // The writer's own timer: an idle wait for requests that ends when a deferred sync is due.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot start writer timer: {e}")))?;
    let durability = Durability::new(conn.path().unwrap_or_default(), counts.syncs);
    std::thread::Builder::new()
        .name("notifyd-writer".into())
        .spawn(move || {
            Writer {
                conn,
                owner,
                commits: counts.commits,
                clock,
                durability,
            }
            .run(rx, &timer)
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
    Ok(tx)
}

/// The counters the writer shares with [`super::SqliteOutbox`].
#[derive(Clone, Default)]
pub(super) struct Counts {
    /// Transactions committed.
    pub(super) commits: Arc<AtomicU64>,
    /// Points at which every commit so far was on disk.
    pub(super) syncs: Arc<AtomicU64>,
}

struct Writer {
    conn: Connection,
    owner: String,
    /// Transactions committed, shared with [`super::SqliteOutbox::commits`].
    commits: Arc<AtomicU64>,
    /// Where "now" comes from for every write.
    clock: Clock,
    /// Which commits are synced, and when the deferred ones are. Declared after `conn`, so
    /// the WAL file it may hold open is closed after the connection.
    durability: Durability,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>, timer: &tokio::runtime::Runtime) {
        let mut batch = Vec::with_capacity(64);
        // A request that arrived while a deferred batch ran but must be synced: it starts the
        // next batch.
        let mut held: Option<Op> = None;
        loop {
            let first = match (held.take(), self.durability.sync_by()) {
                (Some(op), _) => Some(op),
                (None, None) => rx.blocking_recv(),
                // The timeout is made inside `block_on`: its timer needs the runtime.
                (None, Some(by)) => {
                    match timer.block_on(async { tokio::time::timeout_at(by, rx.recv()).await }) {
                        Ok(first) => first,
                        Err(_idle) => {
                            self.durability.sync_wal();
                            continue;
                        }
                    }
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            // Requests that arrive while the batch runs join it before it commits: they share
            // its commit (and its fsync) instead of waiting for one of their own.
            let mut late = |sync: Sync| {
                if held.is_some() {
                    return None;
                }
                match rx.try_recv() {
                    Ok(op) if op.may_join(sync) => Some(op),
                    Ok(op) => {
                        held = Some(op);
                        None
                    }
                    Err(_) => None,
                }
            };
            self.commit_batch(&mut batch, &mut late);
        }
        // Stopping: what the last commits deferred goes to disk now.
        self.durability.sync_wal();
    }

    /// Writes `batch` and the requests `late` hands over while it runs (each given the
    /// batch's [`Sync`], so a deferred batch takes no request that must be synced).
    fn commit_batch(&mut self, batch: &mut Vec<Op>, late: &mut dyn FnMut(Sync) -> Option<Op>) {
        let now = self.clock.now_ms();
        let must_sync = batch.iter().any(Op::must_be_synced);
        let sync = self.durability.before_commit(&self.conn, must_sync);
        if !self.commit_together(batch, now, sync, late) {
            self.commit_isolated(batch, now, sync);
        }
    }

    /// Counts a commit made under `sync`.
    fn committed(&mut self, sync: Sync) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.durability.committed(sync);
    }

    /// Runs the batch without savepoints and commits it if every request succeeded; whether it
    /// did. Otherwise nothing of it is kept (the requests are left in `batch`, unanswered) and
    /// the batch must run again isolated, unless SQLite rolled back by itself (a full disk, an
    /// I/O error): then every request is answered with that error, as an isolated run would.
    fn commit_together(
        &mut self,
        batch: &mut Vec<Op>,
        now: i64,
        sync: Sync,
        late: &mut dyn FnMut(Sync) -> Option<Op>,
    ) -> bool {
        if self.conn.execute_batch("BEGIN IMMEDIATE").is_err() {
            // The isolated run tries again and answers with its own error.
            return false;
        }
        let mut results = Vec::with_capacity(batch.len());
        // At most as many late requests as the batch started with: the first caller waits at
        // most twice as long for the commit as the batch alone would take.
        let room = (batch.len() * 2).min(MAX_BATCH);
        let mut at = 0;
        loop {
            if at == batch.len() {
                match (batch.len() < room).then(|| late(sync)).flatten() {
                    Some(op) => batch.push(op),
                    None => break,
                }
            }
            let (result, error) = self.execute(&batch[at], now);
            if let Some(error) = error {
                if self.conn.is_autocommit() {
                    // SQLite already rolled everything back: nothing of the batch can commit.
                    tracing::error!(error = %error, "Queue commit failed; the batch was rolled back.");
                    for op in batch.drain(..) {
                        fail(op, error.clone());
                    }
                    return true;
                }
                let _ = self.conn.execute_batch("ROLLBACK");
                return false;
            }
            results.push(result);
            at += 1;
        }
        let commit = self.conn.execute_batch("COMMIT").map_err(StoreError::from);
        match &commit {
            Ok(()) => self.committed(sync),
            Err(e) => {
                tracing::error!(error = %e, "Queue commit failed; the batch was rolled back.");
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
            }
        }
        for (op, result) in batch.drain(..).zip(results) {
            result(op)(commit.as_ref().err());
        }
        true
    }

    /// Runs the batch with each request in its own savepoint, so that a request that fails
    /// rolls back only its own changes, and commits the rest.
    fn commit_isolated(&mut self, batch: &mut Vec<Op>, now: i64, sync: Sync) {
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let err = StoreError::from(e);
            tracing::error!(error = %err, "Queue write failed to start.");
            for op in batch.drain(..) {
                fail(op, err.clone());
            }
            return;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut first_error = None;
        for op in batch.drain(..) {
            if self.conn.is_autocommit() {
                // The transaction is gone (see below). Running the rest would commit each on its
                // own (a SAVEPOINT outside a transaction starts and RELEASE commits one), while
                // its caller is told the batch failed: they are failed unrun instead.
                answers.push(Box::new(move |e: Option<&StoreError>| {
                    let err = e.cloned().unwrap_or_else(|| {
                        StoreError::Unavailable("transaction rolled back".into())
                    });
                    fail(op, err)
                }) as Answer);
                continue;
            }
            let (answer, error) = self.run_in_savepoint(op, now);
            answers.push(answer);
            if first_error.is_none() {
                first_error = error;
            }
        }
        // Some errors (SQLITE_FULL, I/O) make SQLite roll the whole transaction back by itself:
        // then nothing in the batch was committed, and every caller must hear so.
        let commit = if self.conn.is_autocommit() {
            Err(first_error
                .unwrap_or_else(|| StoreError::Unavailable("transaction rolled back".into())))
        } else {
            let committed = self.conn.execute_batch("COMMIT").map_err(StoreError::from);
            if committed.is_ok() {
                self.committed(sync);
            }
            committed
        };
        if let Err(e) = &commit {
            tracing::error!(error = %e, "Queue commit failed; the batch was rolled back.");
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
        }
        for a in answers {
            a(commit.as_ref().err());
        }
    }

    /// Runs one request in a savepoint: its own failure rolls back only its own changes.
    fn run_in_savepoint(&self, op: Op, now: i64) -> (Answer, Option<StoreError>) {
        if let Err(e) = self.conn.execute_batch("SAVEPOINT op") {
            let err = StoreError::from(e);
            let returned = err.clone();
            return (Box::new(move |_| fail(op, err)), Some(returned));
        }
        let (result, error) = self.execute(&op, now);
        let answer = result(op);
        if self.conn.is_autocommit() {
            // SQLite already rolled everything back; there is no savepoint left to touch.
        } else if error.is_none() {
            let _ = self.conn.execute_batch("RELEASE op");
        } else {
            let _ = self.conn.execute_batch("ROLLBACK TO op; RELEASE op");
        }
        (answer, error)
    }

    /// Executes a request; returns its result, to be paired with the request's reply, and its
    /// error, if it failed. The request is kept: a batch rolled back runs it again.
    fn execute(&self, op: &Op, now: i64) -> (Ran, Option<StoreError>) {
        macro_rules! done {
            ($variant:ident, $result:expr) => {{
                let result = $result;
                let error = result.as_ref().err().cloned();
                let ran: Ran = Box::new(move |op| match op {
                    Op::$variant { reply, .. } => answer(reply, result),
                    other => Box::new(move |_: Option<&StoreError>| {
                        fail(
                            other,
                            StoreError::Internal("answer for another request".into()),
                        )
                    }) as Answer,
                });
                (ran, error)
            }};
        }
        match op {
            Op::Enqueue { items, .. } => done!(Enqueue, self.enqueue(items, now)),
            Op::Claim {
                channel,
                limit,
                lease_ms,
                ..
            } => done!(Claim, self.claim(channel, *limit, now, *lease_ms)),
            Op::Complete { completions, .. } => done!(Complete, self.complete(completions, now)),
            Op::Cancel { id, .. } => done!(Cancel, self.cancel(id, now)),
            Op::Replay { id, .. } => done!(Replay, self.replay(id, now)),
            Op::Sweep {
                known, retention, ..
            } => done!(Sweep, self.sweep(known, retention, now)),
            Op::Receipt { receipt, .. } => done!(Receipt, self.record_receipt(receipt, now)),
            Op::Purge { retention, .. } => done!(Purge, self.purge(retention, now)),
            Op::MoveDue {
                channel,
                how,
                limit,
                ..
            } => done!(MoveDue, self.move_due(channel, how, *limit, now)),
            Op::RecordEvents { events, .. } => done!(RecordEvents, self.record_events(events)),
            Op::Ping { .. } => done!(Ping, Ok(())),
            Op::PutPreferences { address, prefs, .. } => done!(
                PutPreferences,
                super::recipients::put(&self.conn, address, prefs, now)
            ),
            Op::DeletePreferences { address, .. } => done!(
                DeletePreferences,
                super::recipients::delete(&self.conn, address)
            ),
            Op::OptOut {
                address,
                channel,
                because,
                ..
            } => done!(
                OptOut,
                super::recipients::opt_out(&self.conn, address, channel, now).and_then(|prefs| {
                    self.record_events(because.as_slice())?;
                    Ok(prefs)
                })
            ),
            Op::Acknowledge { id, source, .. } => {
                done!(Acknowledge, self.acknowledge(id, *source, now))
            }
        }
    }

    /// Timeline events, each with the one statement every rule's write reuses.
    pub(super) fn record_events(&self, events: &[RuleEvent]) -> Result<()> {
        if events.is_empty() {
            // Most completions carry none: no statement is looked up for them.
            return Ok(());
        }
        let mut insert = self.conn.prepare_cached(INSERT_EVENT)?;
        for e in events {
            insert.execute(params![e.notification, e.at_ms, e.rule.as_str(), e.detail])?;
        }
        Ok(())
    }

    fn enqueue(&self, items: &[NewNotification], now: i64) -> Result<Vec<Enqueued>> {
        let mut out = Vec::with_capacity(items.len());
        for n in items {
            let merged = match &n.dedup {
                Some(claim) => self.deduplicate(n, claim, now)?,
                None => None,
            };
            out.push(match (merged, &n.digest) {
                (Some(answer), _) => answer,
                (None, None) => self.insert(n, None)?,
                (None, Some(join)) => self.collect(n, join, now)?,
            });
        }
        Ok(out)
    }

    /// Stores `n` as an item of the digest it joins ([`crate::rules::digest`]). A replay of an
    /// idempotency key is answered as such and joins nothing.
    fn collect(&self, n: &NewNotification, join: &DigestJoin, now: i64) -> Result<Enqueued> {
        let stored = self.insert(n, None)?;
        if !matches!(stored, Enqueued::Created { .. }) {
            return Ok(stored);
        }
        let digest_id: String = self.conn.prepare_cached(JOIN_DIGEST)?.query_row(
            params![
                uuid::Uuid::now_v7().to_string(),
                n.channel,
                n.to,
                n.priority.as_str(),
                join.until_ms,
                now,
                join.key,
                join.max,
            ],
            |r| r.get(0),
        )?;
        let vars = join.vars.as_ref().map(serde_json::Value::to_string);
        self.conn.prepare_cached(COLLECT_ITEM)?.execute(params![
            n.id,
            digest_id,
            vars,
            MAX_TIME_MS
        ])?;
        self.record_events(&[crate::rules::digest::collected(
            &n.id, &digest_id, &join.key, now,
        )])?;
        Ok(stored)
    }

    /// Ends the items still waiting in digest `id` as the digest's completion says, each with
    /// its timeline line.
    fn end_digest_items(&self, id: &str, attempt: u32, change: &RowChange, now: i64) -> Result<()> {
        let Some(ending) = crate::rules::digest::ending(id, change) else {
            return Ok(());
        };
        let items: Vec<String> = self
            .conn
            .prepare_cached(END_DIGEST_ITEMS)?
            .query_map(
                params![
                    id,
                    now,
                    ending.state.as_str(),
                    ending.provider_id,
                    ending.code,
                    ending.error
                ],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?;
        let events: Vec<RuleEvent> = items
            .iter()
            .map(|item| crate::rules::digest::ended(item, id, ending.digest, attempt, now))
            .collect();
        self.record_events(&events)
    }

    /// Takes `n`'s dedup key, or merges `n` into the notification holding it
    /// ([`crate::rules::dedup`]). `None`: the key is now `n`'s, insert it. A replay of an
    /// idempotency key is answered as such first: it is the same request, not a duplicate.
    fn deduplicate(
        &self,
        n: &NewNotification,
        claim: &DedupClaim,
        now: i64,
    ) -> Result<Option<Enqueued>> {
        if let Some(key) = &n.idempotency_key
            && let Some(holder) = super::key_holder(&self.conn, key)?
        {
            return Ok(Some(holder.answer(&n.content_hash)));
        }
        let took: Option<String> = rusqlite::OptionalExtension::optional(
            self.conn.prepare_cached(TAKE_DEDUP_KEY)?.query_row(
                params![n.channel, n.to, claim.key, n.id, claim.until_ms, now],
                |r| r.get(0),
            ),
        )?;
        if took.is_some() {
            return Ok(None);
        }
        let holder: Option<(String, String)> = rusqlite::OptionalExtension::optional(
            self.conn
                .prepare_cached(COUNT_DUPLICATE)?
                .query_row(params![n.channel, n.to, claim.key], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                }),
        )?;
        let Some((id, state)) = holder else {
            self.conn
                .prepare_cached(TAKE_ORPHANED_DEDUP_KEY)?
                .execute(params![n.channel, n.to, claim.key, n.id, claim.until_ms])?;
            return Ok(None);
        };
        let state = state.parse::<State>().map_err(StoreError::Internal)?;
        self.record_events(&[crate::rules::dedup::merged(&id, &claim.key, now)])?;
        Ok(Some(Enqueued::Deduplicated {
            id: id.into(),
            state,
        }))
    }

    fn insert(&self, n: &NewNotification, parent: Option<&str>) -> Result<Enqueued> {
        let data = n.data.as_ref().map(serde_json::Value::to_string);
        let deliver_between = n
            .deliver_between
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let fallback = json_list(&n.fallback)?;
        let escalate = json_list(&n.escalation.steps)?;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO notifications (id, channel, recipient, subject, body, html, data,
                     priority, run_at, expires_at, created_at, updated_at, idempotency_key,
                     content_hash, fallback, parent_id, checked, source, deliver_between, escalate,
                     escalation_of)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14, ?15, 1, ?16,
                     ?17, ?18, ?19)
                 ON CONFLICT (idempotency_key) DO NOTHING",
            )?
            .execute(params![
                n.id,
                n.channel,
                n.to,
                n.subject,
                n.body,
                n.html,
                data,
                n.priority.as_str(),
                n.run_at_ms,
                n.expires_at_ms,
                n.created_at_ms,
                n.idempotency_key,
                n.content_hash,
                fallback,
                parent,
                n.source,
                deliver_between,
                escalate,
                n.escalation.root,
            ])?;
        if inserted == 1 {
            return Ok(Enqueued::Created { id: n.id.clone() });
        }
        let key = n.idempotency_key.as_deref().unwrap_or_default();
        match super::key_holder(&self.conn, key)? {
            Some(holder) => Ok(holder.answer(&n.content_hash)),
            None => Err(StoreError::Internal(
                "insert ignored but no row holds its idempotency key".into(),
            )),
        }
    }

    /// Leases up to `limit` decodable rows. A row that cannot be decoded is quarantined on its
    /// own and does not count: the claim goes on with the rest of the channel (up to
    /// [`QUARANTINE_PER_CLAIM`] quarantined rows).
    fn claim(&self, channel: &str, limit: usize, now: i64, lease_ms: i64) -> Result<Vec<Claimed>> {
        let until = now.saturating_add(lease_ms);
        let mut out: Vec<LeasedRow> = Vec::new();
        let mut quarantined = 0;
        while out.len() < limit {
            let want = limit - out.len();
            let mut unreadable = Vec::new();
            let mut returned = 0;
            {
                let mut stmt = self.conn.prepare_cached(CLAIM)?;
                let mut rows = stmt.query(params![
                    self.owner,
                    until,
                    now,
                    channel,
                    i64::try_from(want).unwrap_or(i64::MAX)
                ])?;
                while let Some(r) = rows.next()? {
                    returned += 1;
                    // A rowid table's rowid is always an INTEGER.
                    let rowid: i64 = r.get(0)?;
                    match LeasedRow::decode(r) {
                        Ok(row) => out.push(row),
                        Err(why) => unreadable.push((rowid, why)),
                    }
                }
            }
            for (rowid, why) in &unreadable {
                // The reason may quote stored values: the log names the column only.
                tracing::warn!(
                    channel,
                    rowid,
                    column = why.column,
                    "Quarantined an unreadable notification: dead with unreadable_row."
                );
                self.conn.prepare_cached(QUARANTINE)?.execute(params![
                    rowid,
                    why.to_string(),
                    now
                ])?;
            }
            quarantined += unreadable.len();
            if unreadable.is_empty() || returned < want || quarantined >= QUARANTINE_PER_CLAIM {
                break;
            }
        }
        // Within a priority, ids the daemon assigns (UUIDv7) are in creation order.
        out.sort_by(|a, b| (a.prio_rank, &a.columns.id).cmp(&(b.prio_rank, &b.columns.id)));
        Ok(out
            .into_iter()
            .map(|row| row.columns.into_claimed())
            .collect())
    }

    fn complete(&self, completions: &[Completion], now: i64) -> Result<()> {
        let mut statements = Statements::new(&self.conn);
        for c in completions {
            if let Some(rec) = &c.record {
                statements.get(RECORD_ATTEMPT)?.execute(params![
                    c.id,
                    c.attempt,
                    rec.started_at_ms,
                    rec.latency_ms,
                    rec.outcome,
                    rec.code,
                    rec.error,
                    rec.provider_id,
                    rec.decision,
                    rec.channel.as_str(),
                ])?;
            }
            let plan = match completion::plan(c.outcome.clone(), now) {
                Ok(plan) => plan,
                // A bug in the caller: this row stays leased and is sent again after its lease;
                // the other completions of the request still land.
                Err(e) => {
                    tracing::error!(notification_id = %c.id, error = %e,
                        "Completion refused; the notification will be retried when its lease expires.");
                    continue;
                }
            };
            let landed =
                self.change_leased_row(&mut statements, &c.id, c.lease, &plan.change, now)?;
            let Some(landed) = landed else {
                tracing::warn!(notification_id = %c.id, attempt = c.attempt, lease = c.lease.0,
                    "Completion ignored: the lease was lost to a later claim.");
                continue;
            };
            if landed.digest {
                self.end_digest_items(&c.id, c.attempt, &plan.change, now)?;
            }
            if let (true, Some(trigger)) = (landed.escalates, plan.change.escalation_trigger()) {
                self.queue_escalation(&c.id, trigger, now)?;
            }
            self.record_events(&c.events)?;
            match plan.then {
                None => {}
                Some(FollowUp::AttachEarlyReceipts { provider_id }) => {
                    self.attach_early_receipts(&c.id, &provider_id, now)?;
                }
                Some(FollowUp::QueueFallback) => self.queue_fallback(&c.id, now)?,
            }
        }
        Ok(())
    }

    /// Writes a leased row's next state, fenced by its lease: `None` when it did not land, else
    /// what the follow-ups need to know of the row (a digest, escalation steps). The plain
    /// statement first, the flagged one only when that changed nothing ([`fenced!`]).
    fn change_leased_row(
        &self,
        statements: &mut Statements<'_>,
        id: &str,
        lease: LeaseToken,
        change: &RowChange,
        now: i64,
    ) -> Result<Option<Landed>> {
        use rusqlite::OptionalExtension;
        let mut run =
            |plain: &'static str, flagged: &'static str, values: &[&dyn rusqlite::ToSql]| {
                if statements.get(plain)?.execute(values)? > 0 {
                    return Ok(Some(Landed {
                        digest: false,
                        escalates: false,
                    }));
                }
                let landed = statements
                    .get(flagged)?
                    .query_row(values, |r| {
                        Ok(Landed {
                            digest: r.get(0)?,
                            escalates: r.get(1)?,
                        })
                    })
                    .optional()?;
                Ok(landed)
            };
        match change {
            RowChange::Deliver { provider_id } => run(
                DELIVER,
                DELIVER_FLAGGED,
                params![id, lease.0, self.owner, provider_id, now],
            ),
            RowChange::Requeue {
                run_at_ms,
                refund,
                last: Some((code, error)),
            } => run(
                REQUEUE,
                REQUEUE_FLAGGED,
                params![
                    id,
                    lease.0,
                    self.owner,
                    run_at_ms,
                    i64::from(*refund),
                    code,
                    error,
                    now
                ],
            ),
            RowChange::Requeue {
                run_at_ms,
                refund,
                last: None,
            } => run(
                REQUEUE_KEEPING_ERROR,
                REQUEUE_KEEPING_ERROR_FLAGGED,
                params![id, lease.0, self.owner, run_at_ms, i64::from(*refund), now],
            ),
            RowChange::End { state, code, error } => run(
                END,
                END_FLAGGED,
                params![id, lease.0, self.owner, state.as_str(), code, error, now],
            ),
            RowChange::Move {
                channel,
                run_at_ms,
                code,
                error,
            } => run(
                MOVE,
                MOVE_FLAGGED,
                params![
                    id, lease.0, self.owner, channel, run_at_ms, code, error, now
                ],
            ),
        }
    }

    /// Queues the next escalation step of a notification that was just delivered or ended
    /// ([`escalation::next_step`]), unless its chain was acknowledged. Steps that cannot be read
    /// back queue nothing: the notification itself already reached its state.
    fn queue_escalation(&self, parent: &str, trigger: StepTrigger, now: i64) -> Result<()> {
        let read = self
            .conn
            .prepare_cached(STEP_PARENT)?
            .query_row(params![parent], |r| {
                Ok(decode_step_parent(r, parent).map(|p| (p, r.get::<_, Option<i64>>(8))))
            })?;
        let (parent_row, acked_at) = match read {
            Ok((p, Ok(acked_at))) => (p, acked_at),
            Ok((_, Err(e))) => return Err(e.into()),
            Err(why) => {
                tracing::error!(notification_id = %parent, column = why.column,
                    "A stored column needed for the next escalation step cannot be read; no step was queued.");
                return Ok(());
            }
        };
        let child_id = NotificationId::generate();
        if let Some(step) =
            escalation::next_step(parent_row, acked_at.is_some(), trigger, child_id, now)
        {
            tracing::info!(notification_id = %parent, step = %step.id, channel = %step.channel,
                run_at = step.run_at_ms, "Queued the next escalation step.");
            self.insert(&step, Some(parent))?;
            self.record_events(&escalation::step_events(parent, &step, trigger, now))?;
        }
        Ok(())
    }

    /// Acknowledges the chain `id` belongs to, as [`escalation::plan_ack`] says: marks its first
    /// notification and cancels its waiting step in this one transaction.
    fn acknowledge(&self, id: &str, source: AckSource, now: i64) -> Result<Acknowledged> {
        use rusqlite::OptionalExtension;
        let target = self
            .conn
            .prepare_cached(ACK_TARGET)?
            .query_row(params![id], |r| {
                Ok(AckTarget {
                    root: r.get(0)?,
                    escalates: r.get(1)?,
                    acked_at_ms: r.get(2)?,
                })
            })
            .optional()?;
        Ok(match escalation::plan_ack(target) {
            AckPlan::NotFound => Acknowledged::NotFound,
            AckPlan::NothingToAck => Acknowledged::NothingToAck,
            AckPlan::Already { root, at_ms } => Acknowledged::Already {
                root: root.into(),
                at_ms,
            },
            AckPlan::Mark { root } => {
                self.conn
                    .prepare_cached(MARK_ACKED)?
                    .execute(params![root, now])?;
                let cancelled =
                    self.conn
                        .prepare_cached(CANCEL_WAITING_STEPS)?
                        .execute(params![
                            root,
                            now,
                            escalation::ACKNOWLEDGED_CODE,
                            escalation::ACKNOWLEDGED_MESSAGE
                        ])?;
                tracing::info!(notification_id = %root, via = source.as_str(), cancelled,
                    "Escalation acknowledged.");
                let cancelled = cancelled as u64;
                self.record_events(&[escalation::ack_event(&root, source, cancelled, now)])?;
                Acknowledged::Done {
                    root: root.into(),
                    at_ms: now,
                    cancelled,
                }
            }
        })
    }

    /// Queues the fallback child of a notification that ended badly ([`fallback::fallback_child`]).
    /// A parent whose stored columns cannot be read ends as a dead letter instead: the completion
    /// itself, and every other one in the batch, still commits.
    fn queue_fallback(&self, parent: &str, now: i64) -> Result<()> {
        let parent_row = self
            .conn
            .prepare_cached(FALLBACK_PARENT)?
            .query_row(params![parent], |r| Ok(decode_fallback_parent(r, parent)))?;
        let parent_row = match parent_row {
            Ok(p) => p,
            Err(why) => {
                // The reason may quote stored values: the log names the column only.
                tracing::error!(notification_id = %parent, column = why.column,
                    "A stored column needed for the fallback cannot be read; the notification is now a dead letter.");
                let reason = Reason::UNREADABLE_ROW;
                self.conn.prepare_cached(END_UNREADABLE)?.execute(params![
                    parent,
                    reason.code,
                    why.to_string(),
                    now
                ])?;
                return Ok(());
            }
        };
        let child_id = NotificationId::generate();
        if let Some(child) = fallback::fallback_child(parent_row, child_id, now) {
            self.insert(&child, Some(parent))?;
        }
        Ok(())
    }

    fn cancel(&self, id: &str, now: i64) -> Result<Transition> {
        let answer = self.request(transition::Request::Cancel, CANCEL, id, now)?;
        if answer == Transition::Done(State::Cancelled) {
            // A cancelled digest fails the items waiting in it, with its reason.
            self.end_digest_items(id, 0, &crate::rules::digest::cancelled(), now)?;
        }
        Ok(answer)
    }

    fn replay(&self, id: &str, now: i64) -> Result<Transition> {
        self.request(transition::Request::Replay, REPLAY, id, now)
    }

    /// Runs a caller's request with its statement, and answers it.
    fn request(
        &self,
        request: transition::Request,
        sql: &str,
        id: &str,
        now: i64,
    ) -> Result<Transition> {
        let changed = self.conn.prepare_cached(sql)?.execute(params![
            id,
            now,
            request.applies_to().as_str(),
            request.leads_to().as_str()
        ])?;
        let current = if changed == 1 {
            None
        } else {
            let state: Option<String> = rusqlite::OptionalExtension::optional(
                self.conn
                    .prepare_cached("SELECT state FROM notifications WHERE id = ?1")?
                    .query_row(params![id], |r| r.get(0)),
            )?;
            state
                .map(|s| s.parse::<State>().map_err(StoreError::Internal))
                .transpose()?
        };
        Ok(request.answer(changed == 1, current))
    }

    fn move_due(
        &self,
        channel: &str,
        how: &OpenBreakerMove,
        limit: usize,
        now: i64,
    ) -> Result<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let moved = match how {
            OpenBreakerMove::Defer { until_ms } => {
                let why = Reason::BREAKER_DEFERRED;
                self.conn.prepare_cached(DEFER_DUE)?.execute(params![
                    channel,
                    now,
                    until_ms,
                    limit,
                    why.code,
                    why.message
                ])?
            }
            OpenBreakerMove::Reroute { to } => {
                let why = Reason::BREAKER_MOVED;
                self.conn.prepare_cached(REROUTE_DUE)?.execute(params![
                    channel,
                    now,
                    to,
                    limit,
                    why.code,
                    why.message
                ])?
            }
        };
        Ok(moved as u64)
    }

    /// Stores a receipt once and applies it to the notification of its own channel that
    /// carries its provider id. The channel matters: a receipt verified with one channel's secret
    /// must never touch another channel's notification, even if the provider ids collide. A
    /// notification's `provider_id` is written only with `delivered`, and a delivered row never
    /// changes channel again, so its `channel` column is the channel that produced that id (also
    /// after a failover in place).
    fn record_receipt(&self, r: &InboundReceipt, now: i64) -> Result<RecordedReceipt> {
        let target: Option<String> = rusqlite::OptionalExtension::optional(
            self.conn
                .prepare_cached(RECEIPT_TARGET)?
                .query_row(params![r.provider_id, r.channel], |row| row.get(0)),
        )?;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO receipts (channel, provider_id, status, provider_status, error_code,
                     received_at, notification_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (channel, provider_id, provider_status) DO NOTHING",
            )?
            .execute(params![
                r.channel,
                r.provider_id,
                r.status.as_str(),
                r.provider_status,
                r.error_code,
                now,
                target,
            ])?;
        if inserted == 0 {
            // Already stored (and applied, if it matched): a replay changes nothing.
            return Ok(RecordedReceipt {
                notification_id: target.map(Into::into),
                duplicate: true,
            });
        }
        if let Some(id) = &target {
            self.apply_receipt(
                id,
                r.status,
                &r.provider_status,
                r.error_code.as_deref(),
                now,
            )?;
        }
        Ok(RecordedReceipt {
            notification_id: target.map(Into::into),
            duplicate: false,
        })
    }

    /// Applies a stored receipt to its notification as [`receipt::receipt_failure`] says.
    fn apply_receipt(
        &self,
        id: &str,
        status: ReceiptStatus,
        provider_status: &str,
        error_code: Option<&str>,
        now: i64,
    ) -> Result<()> {
        if let Some((code, error)) = receipt::receipt_failure(status, provider_status, error_code) {
            let (from, to) = receipt::RECEIPT_FAILS;
            self.conn.prepare_cached(FAIL_BY_RECEIPT)?.execute(params![
                id,
                code,
                error,
                now,
                from.as_str(),
                to.as_str()
            ])?;
        }
        Ok(())
    }

    /// Receipts of this notification's channel that arrived before its provider id was
    /// recorded (the notification was just delivered, so `channel` is the one that sent it).
    fn attach_early_receipts(&self, id: &str, provider_id: &str, now: i64) -> Result<()> {
        let early: Vec<(String, String, Option<String>)> = self
            .conn
            .prepare_cached(EARLY_RECEIPTS)?
            .query_map(params![id, provider_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (status, provider_status, code) in early {
            match status.parse() {
                Ok(status) => {
                    self.apply_receipt(id, status, &provider_status, code.as_deref(), now)?
                }
                // The schema's CHECK keeps this out; a receipt that cannot be read changes nothing.
                Err(e) => tracing::warn!(notification_id = %id, error = %e,
                    "A stored receipt cannot be read; it was not applied."),
            }
        }
        Ok(())
    }

    /// One retention batch: at most [`PURGE_BATCH`] finished notifications (with their attempts
    /// and receipts) and as many unmatched receipts. Short on purpose, so other writes never wait
    /// long; [`super::SqliteOutbox::sweep`] asks again while batches come back full.
    fn purge(&self, retention: &Retention, now: i64) -> Result<Purged> {
        let before = retention.finished_before(now);
        let batch = i64::try_from(PURGE_BATCH).unwrap_or(i64::MAX);
        for sql in [PURGE_ATTEMPTS, PURGE_RECEIPTS, PURGE_EVENTS] {
            self.conn
                .prepare_cached(sql)?
                .execute(params![before, batch])?;
        }
        let notifications = self
            .conn
            .prepare_cached(PURGE_FINISHED)?
            .execute(params![before, batch])?;
        let receipts = self
            .conn
            .prepare_cached(PURGE_UNMATCHED_RECEIPTS)?
            .execute(params![retention.unmatched_receipts_before(now), batch])?;
        Ok(Purged {
            notifications: notifications as u64,
            receipts: receipts as u64,
        })
    }

    fn sweep(&self, known: &[String], retention: &Retention, now: i64) -> Result<SweepReport> {
        let purged = self.purge(retention, now)?;
        // Dedup keys whose window is over hold nothing any more ([`crate::rules::dedup::holds`]).
        self.conn
            .prepare_cached(PURGE_DEDUP_KEYS)?
            .execute(params![now, sweep::PURGE_BATCH as i64])?;
        // Bounded batches keep the writer responsive; the next sweep takes the rest.
        let expired_reason = Reason::EXPIRED;
        let expired = self
            .conn
            .prepare_cached(EXPIRE_OVERDUE)?
            .query_map(
                params![
                    now,
                    expired_reason.code,
                    expired_reason.message,
                    sweep::EXPIRE_BATCH as i64
                ],
                |r| {
                    // Shown, not trusted: a row another program wrote may hold anything here.
                    Ok(ExpiredRow {
                        id: stored::lossy_string(r, 0)?.into(),
                        channel: stored::lossy_string(r, 1)?.into(),
                    })
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Channel names as stored: one that is not UTF-8 text (another program's row) is no
        // configured channel, and must not fail the sweep.
        let live: Vec<Result<String, Vec<u8>>> = self
            .conn
            .prepare_cached(LIVE_CHANNELS)?
            .query_map([], |r| {
                Ok(match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(b) => {
                        String::from_utf8(b.to_vec()).map_err(|e| e.into_bytes())
                    }
                    rusqlite::types::ValueRef::Blob(b) => Err(b.to_vec()),
                    _ => Err(stored::lossy_string(r, 0)?.into_bytes()),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let (named, unnamed): (Vec<_>, Vec<_>) = live.into_iter().partition(Result::is_ok);
        let named: Vec<String> = named.into_iter().flatten().collect();
        let orphan_reason = Reason::UNKNOWN_CHANNEL;
        let mut orphaned = 0;
        for channel in sweep::unknown_channels(&named, known) {
            orphaned += self
                .conn
                .prepare_cached(DEAD_LETTER_ORPHANS)?
                .execute(params![
                    channel,
                    now,
                    orphan_reason.code,
                    orphan_reason.message,
                    sweep::ORPHAN_BATCH as i64
                ])?;
        }
        for bytes in unnamed.into_iter().filter_map(Result::err) {
            orphaned += self
                .conn
                .prepare_cached(DEAD_LETTER_UNNAMED_ORPHANS)?
                .execute(params![
                    bytes,
                    now,
                    orphan_reason.code,
                    orphan_reason.message,
                    sweep::ORPHAN_BATCH as i64
                ])?;
        }
        Ok(SweepReport {
            expired,
            orphaned: orphaned as u64,
            purged: purged.notifications,
            receipts_purged: purged.receipts,
        })
    }
}

/// A row the claim leased, decoded column by column into what the dispatcher trusts. Every
/// column is checked for type, encoding, range and JSON shape: one that fails makes the row
/// unreadable, and it is quarantined instead of failing the claim.
struct LeasedRow {
    prio_rank: i64,
    columns: ClaimedColumns,
}

impl LeasedRow {
    /// Decodes a row of [`CLAIM`]'s RETURNING list.
    fn decode(r: &rusqlite::Row<'_>) -> Result<Self, stored::Unreadable> {
        let checked = matches!(r.get_ref(13), Ok(rusqlite::types::ValueRef::Integer(1)));
        let validation = if checked {
            Validation::Done
        } else {
            Validation::Pending {
                fallback: stored::opt_json(r, 14, "fallback")?.unwrap_or_default(),
            }
        };
        let attempt = stored::int(r, 9, "attempts", 1..=i64::from(u32::MAX))?;
        let prio_rank = stored::int(r, 12, "prio_rank", 0..=2)?;
        Ok(Self {
            prio_rank,
            columns: ClaimedColumns {
                id: stored::text(r, 1, "id")?,
                channel: stored::text(r, 2, "channel")?,
                recipient: stored::text(r, 3, "recipient")?,
                subject: stored::opt_text(r, 4, "subject")?,
                body: stored::opt_text(r, 5, "body")?,
                html: stored::opt_text(r, 6, "html")?,
                data: stored::opt_json(r, 7, "data")?,
                created_at_ms: stored::int(r, 8, "created_at", 0..=MAX_TIME_MS)?,
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                expires_at_ms: stored::opt_int(r, 10, "expires_at", i64::MIN..=i64::MAX)?,
                tried: stored::opt_json(r, 11, "tried")?.unwrap_or_default(),
                lease: LeaseToken(stored::int(r, 15, "lease", LeaseToken::CLAIMED)?),
                validation,
                priority: Priority::of_rank(prio_rank),
                deliver_between: stored::opt_json(r, 16, "deliver_between")?,
                digest_key: stored::opt_text(r, 17, "digest_key")?,
            },
        })
    }
}

/// The parent of a fallback child as the model sees it ([`FALLBACK_PARENT`]'s row), decoded
/// like a claimed row, or why a stored column cannot be read.
fn decode_fallback_parent(
    r: &rusqlite::Row<'_>,
    id: &str,
) -> std::result::Result<FallbackParent, stored::Unreadable> {
    let priority = stored::text(r, 5, "priority")?;
    Ok(FallbackParent {
        id: id.to_owned(),
        routes: stored::opt_json(r, 0, "fallback")?.unwrap_or_default(),
        content: Content {
            subject: stored::opt_text(r, 1, "subject")?,
            body: stored::opt_text(r, 2, "body")?,
            html: stored::opt_text(r, 3, "html")?,
            data: stored::opt_json(r, 4, "data")?,
        },
        priority: priority.parse().map_err(|e: String| stored::Unreadable {
            column: "priority",
            problem: e,
        })?,
        expires_at_ms: stored::opt_int(r, 6, "expires_at", i64::MIN..=i64::MAX)?,
        created_at_ms: stored::int(r, 7, "created_at", i64::MIN..=i64::MAX)?,
    })
}

/// The notification before an escalation step as the model sees it ([`STEP_PARENT`]'s row).
fn decode_step_parent(
    r: &rusqlite::Row<'_>,
    id: &str,
) -> std::result::Result<StepParent, stored::Unreadable> {
    let priority = stored::text(r, 6, "priority")?;
    Ok(StepParent {
        id: id.to_owned(),
        steps: stored::opt_json(r, 0, "escalate")?.unwrap_or_default(),
        root: stored::text(r, 1, "escalation_of")?,
        content: Content {
            subject: stored::opt_text(r, 2, "subject")?,
            body: stored::opt_text(r, 3, "body")?,
            html: stored::opt_text(r, 4, "html")?,
            data: stored::opt_json(r, 5, "data")?,
        },
        priority: priority.parse().map_err(|e: String| stored::Unreadable {
            column: "priority",
            problem: e,
        })?,
        expires_at_ms: stored::opt_int(r, 7, "expires_at", i64::MIN..=i64::MAX)?,
    })
}

/// A list column as stored: JSON text, `NULL` when empty.
fn json_list<T: serde::Serialize>(items: &[T]) -> Result<Option<String>> {
    if items.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(items)
        .map(Some)
        .map_err(|e| StoreError::Internal(e.to_string()))
}

/// What one retention batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Purged {
    /// Finished notifications (with their attempts and receipts).
    pub notifications: u64,
    /// Receipts that never matched.
    pub receipts: u64,
}

impl Purged {
    /// Whether either kind filled its batch, so more may be waiting.
    pub(super) fn full(&self) -> bool {
        super::super::sweep::purge_again(self.notifications, self.receipts)
    }
}

/// Answers a request with an error.
fn fail(op: Op, err: StoreError) {
    match op {
        Op::Enqueue { reply, .. } => drop(reply.send(Err(err))),
        Op::Claim { reply, .. } => drop(reply.send(Err(err))),
        Op::Complete { reply, .. } => drop(reply.send(Err(err))),
        Op::Cancel { reply, .. } | Op::Replay { reply, .. } => drop(reply.send(Err(err))),
        Op::Sweep { reply, .. } => drop(reply.send(Err(err))),
        Op::Receipt { reply, .. } => drop(reply.send(Err(err))),
        Op::Purge { reply, .. } => drop(reply.send(Err(err))),
        Op::MoveDue { reply, .. } => drop(reply.send(Err(err))),
        Op::Ping { reply } | Op::PutPreferences { reply, .. } => drop(reply.send(Err(err))),
        Op::DeletePreferences { reply, .. } => drop(reply.send(Err(err))),
        Op::OptOut { reply, .. } => drop(reply.send(Err(err))),
        Op::RecordEvents { reply, .. } => drop(reply.send(Err(err))),
        Op::Acknowledge { reply, .. } => drop(reply.send(Err(err))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(body: String) -> NewNotification {
        NewNotification {
            body: Some(body),
            ..super::super::tests::note("c")
        }
    }

    fn enqueue(n: NewNotification) -> (Op, oneshot::Receiver<Result<Vec<Enqueued>>>) {
        let (reply, rx) = oneshot::channel();
        (
            Op::Enqueue {
                items: vec![n],
                reply,
            },
            rx,
        )
    }

    fn writer(dir: &tempfile::TempDir) -> Writer {
        writer_counting_syncs(dir, Arc::default())
    }

    fn writer_counting_syncs(dir: &tempfile::TempDir, syncs: Arc<AtomicU64>) -> Writer {
        let mut conn = super::super::open_connection(&dir.path().join("q.db"), false).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let durability = Durability::new(conn.path().unwrap_or_default(), syncs);
        Writer {
            conn,
            owner: "test".into(),
            commits: Arc::default(),
            clock: Clock::System,
            durability,
        }
    }

    fn stored(writer: &Writer, id: &str) -> i64 {
        writer
            .conn
            .query_row(
                "SELECT count(*) FROM notifications WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn a_request_that_fails_undoes_only_itself_and_the_batch_commits_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir);
        let taken = note("first".into());
        let (op, rx) = enqueue(taken.clone());
        writer.commit_batch(&mut vec![op], &mut |_| None);
        rx.blocking_recv().unwrap().unwrap();
        // Its first item is new, its second reuses an id: the store refuses the request.
        let half_new = note("half".into());
        let (reply, failing_rx) = oneshot::channel();
        let failing = Op::Enqueue {
            items: vec![half_new.clone(), taken],
            reply,
        };
        let before = note("before".into());
        let after = note("after".into());
        let (before_op, before_rx) = enqueue(before.clone());
        let (after_op, after_rx) = enqueue(after.clone());

        writer.commit_batch(&mut vec![before_op, failing, after_op], &mut |_| None);

        assert!(failing_rx.blocking_recv().unwrap().is_err());
        assert_eq!(
            stored(&writer, &half_new.id),
            0,
            "a failed request keeps none of its changes"
        );
        for (n, rx) in [(&before, before_rx), (&after, after_rx)] {
            assert_eq!(
                rx.blocking_recv().unwrap().unwrap(),
                vec![Enqueued::Created { id: n.id.clone() }]
            );
            assert_eq!(stored(&writer, &n.id), 1);
        }
        assert_eq!(
            writer.commits.load(Ordering::Relaxed),
            2,
            "one commit per batch"
        );
    }

    #[test]
    fn requests_after_a_rollback_in_the_same_batch_are_failed_unrun() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let mut conn = super::super::open_connection(&path, false).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        // No room to grow: a large row fails like a full disk (and SQLite rolls the whole
        // transaction back), while a small one still fits in the pages the file has.
        let pages: u64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
        let durability = Durability::new(conn.path().unwrap_or_default(), Arc::default());
        let mut writer = Writer {
            conn,
            owner: "test".into(),
            commits: Arc::default(),
            clock: Clock::System,
            durability,
        };
        let (big, big_rx) = enqueue(note("x".repeat(256 * 1024)));
        let small_note = note("small".into());
        let small_id = small_note.id.clone();
        let (small, small_rx) = enqueue(small_note);

        writer.commit_batch(&mut vec![big, small], &mut |_| None);

        assert!(matches!(
            big_rx.blocking_recv().unwrap(),
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            small_rx.blocking_recv().unwrap(),
            Err(StoreError::Unavailable(_))
        ));
        let stored: i64 = writer
            .conn
            .query_row(
                "SELECT count(*) FROM notifications WHERE id = ?1",
                [&small_id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            stored, 0,
            "a request answered 'failed' must not be committed"
        );
    }

    fn claim(channel: &str) -> (Op, oneshot::Receiver<Result<Vec<Claimed>>>) {
        let (reply, rx) = oneshot::channel();
        let op = Op::Claim {
            channel: channel.into(),
            limit: 10,
            lease_ms: 60_000,
            reply,
        };
        (op, rx)
    }

    /// `PRAGMA synchronous` of the writer's connection: 2 is FULL, 1 NORMAL.
    fn synchronous(writer: &Writer) -> i64 {
        writer
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn an_enqueue_commits_synced_and_a_claim_alone_defers_its_sync() {
        let dir = tempfile::tempdir().unwrap();
        let syncs = Arc::new(AtomicU64::new(0));
        let mut writer = writer_counting_syncs(&dir, syncs.clone());

        let (op, rx) = enqueue(note("due".into()));
        writer.commit_batch(&mut vec![op], &mut |_| None);
        rx.blocking_recv().unwrap().unwrap();
        assert_eq!(synchronous(&writer), 2);
        assert_eq!(syncs.load(Ordering::Relaxed), 1);
        assert_eq!(writer.durability.sync_by(), None);

        let (op, rx) = claim("c");
        writer.commit_batch(&mut vec![op], &mut |_| None);
        assert_eq!(rx.blocking_recv().unwrap().unwrap().len(), 1);
        assert_eq!(synchronous(&writer), 1);
        assert_eq!(syncs.load(Ordering::Relaxed), 1);
        assert!(writer.durability.sync_by().is_some());
    }

    /// A writer that committed one notification (synced) and then its claim (deferred), and
    /// its count of syncs.
    fn after_a_deferred_claim(dir: &tempfile::TempDir) -> (Writer, Arc<AtomicU64>) {
        let syncs = Arc::new(AtomicU64::new(0));
        let mut writer = writer_counting_syncs(dir, syncs.clone());
        let (op, _rx) = enqueue(note("due".into()));
        writer.commit_batch(&mut vec![op], &mut |_| None);
        let (op, _rx) = claim("c");
        writer.commit_batch(&mut vec![op], &mut |_| None);
        (writer, syncs)
    }

    #[test]
    fn the_next_enqueue_syncs_what_a_claim_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, syncs) = after_a_deferred_claim(&dir);

        let (claim_op, claim_rx) = claim("c");
        let (op, rx) = enqueue(note("later".into()));
        writer.commit_batch(&mut vec![claim_op, op], &mut |_| None);

        rx.blocking_recv().unwrap().unwrap();
        claim_rx.blocking_recv().unwrap().unwrap();
        assert_eq!(synchronous(&writer), 2);
        assert_eq!(syncs.load(Ordering::Relaxed), 2);
        assert_eq!(writer.durability.sync_by(), None);
    }

    #[test]
    fn an_idle_sync_puts_the_deferred_commits_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (mut writer, syncs) = after_a_deferred_claim(&dir);

        writer.durability.sync_wal();

        assert_eq!(syncs.load(Ordering::Relaxed), 2);
        assert_eq!(writer.durability.sync_by(), None);
    }

    #[test]
    fn a_request_that_arrives_while_a_batch_runs_shares_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir);
        let early = note("early".into());
        let late_note = note("late".into());
        let (early_op, early_rx) = enqueue(early.clone());
        let (late_op, late_rx) = enqueue(late_note.clone());
        let mut arriving = Some(late_op);

        writer.commit_batch(&mut vec![early_op], &mut |_| arriving.take());

        early_rx.blocking_recv().unwrap().unwrap();
        late_rx.blocking_recv().unwrap().unwrap();
        assert_eq!(writer.commits.load(Ordering::Relaxed), 1);
        assert_eq!(stored(&writer, &early.id), 1);
        assert_eq!(stored(&writer, &late_note.id), 1);
    }

    #[test]
    fn a_batch_takes_at_most_as_many_late_requests_as_it_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir);
        let (first, _first_rx) = enqueue(note("first".into()));
        let mut arriving: Vec<_> = (0..3).map(|n| enqueue(note(format!("late {n}")))).collect();
        let mut offered = 0;

        writer.commit_batch(&mut vec![first], &mut |_| {
            offered += 1;
            arriving.pop().map(|(op, _rx)| op)
        });

        assert_eq!(offered, 1);
        assert_eq!(arriving.len(), 2);
    }

    #[test]
    fn a_deferred_batch_is_offered_late_requests_as_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(&dir);
        let (op, _rx) = enqueue(note("due".into()));
        writer.commit_batch(&mut vec![op], &mut |_| None);
        let mut offered = Vec::new();

        let (op, _rx) = claim("c");
        writer.commit_batch(&mut vec![op], &mut |sync| {
            offered.push(sync);
            None
        });

        assert_eq!(offered, [Sync::Deferred]);
    }

    #[test]
    fn only_claims_and_completions_join_a_deferred_batch() {
        let (claim_op, _rx) = claim("c");
        let (complete_op, _complete_rx) = {
            let (reply, rx) = oneshot::channel();
            let op = Op::Complete {
                completions: Vec::new(),
                reply,
            };
            (op, rx)
        };
        let (enqueue_op, _enqueue_rx) = enqueue(note("x".into()));
        assert!(claim_op.may_join(Sync::Deferred));
        assert!(complete_op.may_join(Sync::Deferred));
        assert!(!enqueue_op.may_join(Sync::Deferred));
        assert!(enqueue_op.may_join(Sync::Now));
        assert!(claim_op.may_join(Sync::Now));
    }
}
