//! The single writer: every write to the queue file goes through this thread, batched.
//!
//! It blocks for the first request, takes every other request already waiting, runs them all in
//! one `BEGIN IMMEDIATE` transaction (each inside its own savepoint, so one bad request cannot
//! spoil the others) and commits once. Callers are answered only after the commit: that is what
//! makes "accepted" durable, and sharing the fsync is what makes it fast. No timer is involved:
//! under load, requests pile up while the previous commit syncs, and the batch grows by itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::super::*;

/// Requests waiting for the writer before senders are made to wait.
const QUEUE: usize = 8192;
/// Requests folded into one transaction at most.
const MAX_BATCH: usize = 4096;

/// Leases the next due rows of a channel: walks `notifications_due` in priority, then due
/// order (a test checks the plan). `prio_rank IN (0, 1, 2)` is what lets it seek to the due
/// rows of each priority instead of stepping over every scheduled one (8.9 ms a claim behind
/// 100,000 rows scheduled for later, against 0.01 ms). RETURNING comes in the update's own order (by id), so the
/// rows are sorted by `prio_rank` afterwards.
pub(super) const CLAIM: &str = "UPDATE notifications
     SET state = 'sending', attempts = attempts + 1, lease_owner = ?1, run_at = ?2,
         updated_at = ?3
     WHERE id IN (
         SELECT id FROM notifications
         WHERE channel = ?4 AND state IN ('queued', 'sending') AND prio_rank IN (0, 1, 2)
           AND run_at <= ?3
         ORDER BY prio_rank, run_at
         LIMIT ?5)
     RETURNING id, channel, recipient, subject, body, html, data, created_at, attempts,
               expires_at, tried, prio_rank";

/// Due, queued rows of a channel whose breaker is open, pushed to its next probe. Its terms are
/// the claim's, so it seeks in `notifications_due` like the claim (a test checks the plan).
pub(super) const DEFER_DUE: &str =
    "UPDATE notifications SET run_at = ?3, last_code = 'breaker_open',
         last_error = 'deferred: the channel''s circuit breaker is open', updated_at = ?2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = ?1 AND state IN ('queued', 'sending') AND prio_rank IN (0, 1, 2)
                    AND run_at <= ?2 AND state = 'queued'
                  ORDER BY prio_rank, run_at LIMIT ?4)";

/// Due, queued rows of a channel whose breaker is open, moved to a failover channel they have
/// not been on yet; seeks like [`DEFER_DUE`].
pub(super) const REROUTE_DUE: &str =
    "UPDATE notifications SET tried = json_insert(coalesce(tried, '[]'), '$[#]', channel),
         channel = ?3, run_at = ?2, attempts = 0, last_code = 'failed_over',
         last_error = 'moved: the channel''s circuit breaker is open', updated_at = ?2
     WHERE id IN (SELECT id FROM notifications
                  WHERE channel = ?1 AND state IN ('queued', 'sending') AND prio_rank IN (0, 1, 2)
                    AND run_at <= ?2 AND state = 'queued'
                    AND NOT EXISTS (SELECT 1 FROM json_each(coalesce(tried, '[]'))
                                    WHERE value = ?3)
                  ORDER BY prio_rank, run_at LIMIT ?4)";

/// The oldest finished rows, for retention. Its state test is the `notifications_finished`
/// index's own expression (0005), so it walks that index (a test checks the plan).
pub(super) const OLD_FINISHED: &str = "SELECT id FROM notifications
     WHERE (state IN ('delivered', 'failed') OR state IN ('expired', 'cancelled'))
         AND updated_at < ?1
     ORDER BY updated_at LIMIT ?2";

/// The notification a receipt refers to: walks `notifications_by_provider_id`.
pub(super) const RECEIPT_TARGET: &str =
    "SELECT id FROM notifications WHERE provider_id = ?1 AND channel = ?2 LIMIT 1";

/// Receipts that arrived before their notification's provider id, found by index.
pub(super) const EARLY_RECEIPTS: &str = "UPDATE receipts SET notification_id = ?1
     WHERE provider_id = ?2 AND notification_id IS NULL
       AND channel = (SELECT channel FROM notifications WHERE id = ?1)
     RETURNING status, provider_status, error_code";

/// Queued rows past their `expires_at`, in bounded batches: walks `notifications_expiring`.
pub(super) const EXPIRE_OVERDUE: &str =
    "UPDATE notifications SET state = 'expired', last_code = 'expired',
         last_error = 'expires_at passed before it could be sent', updated_at = ?1
     WHERE id IN (SELECT id FROM notifications
                  WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= ?1
                  LIMIT 1000)
     RETURNING id, channel";

/// A write request.
pub enum Op {
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
    Ping {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// Sends a request's answer once the fate of its transaction is known.
type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

fn answer<T: Send + 'static>(reply: oneshot::Sender<Result<T>>, result: Result<T>) -> Answer {
    Box::new(move |commit_error| {
        let _ = reply.send(match commit_error {
            Some(e) => Err(e.clone()),
            None => result,
        });
    })
}

/// Starts the writer thread; it ends when every sender is dropped, after the last batch.
pub fn spawn(conn: Connection, owner: String, commits: Arc<AtomicU64>) -> Result<mpsc::Sender<Op>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("notifyd-writer".into())
        .spawn(move || {
            Writer {
                conn,
                owner,
                commits,
            }
            .run(rx)
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
    Ok(tx)
}

struct Writer {
    conn: Connection,
    owner: String,
    /// Transactions committed, shared with [`super::SqliteOutbox::commits`].
    commits: Arc<AtomicU64>,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(64);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
    }

    fn commit_batch(&self, batch: &mut Vec<Op>) {
        let now = now_ms();
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
                self.commits.fetch_add(1, Ordering::Relaxed);
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
        let (answer, error) = self.execute(op, now);
        if self.conn.is_autocommit() {
            // SQLite already rolled everything back; there is no savepoint left to touch.
        } else if error.is_none() {
            let _ = self.conn.execute_batch("RELEASE op");
        } else {
            let _ = self.conn.execute_batch("ROLLBACK TO op; RELEASE op");
        }
        (answer, error)
    }

    /// Executes a request; returns its answer and its error, if it failed.
    fn execute(&self, op: Op, now: i64) -> (Answer, Option<StoreError>) {
        macro_rules! done {
            ($reply:expr, $result:expr) => {{
                let result = $result;
                let error = result.as_ref().err().cloned();
                (answer($reply, result), error)
            }};
        }
        match op {
            Op::Enqueue { items, reply } => done!(reply, self.enqueue(&items)),
            Op::Claim {
                channel,
                limit,
                lease_ms,
                reply,
            } => done!(reply, self.claim(&channel, limit, now, lease_ms)),
            Op::Complete { completions, reply } => done!(reply, self.complete(&completions, now)),
            Op::Cancel { id, reply } => done!(reply, self.cancel(&id, now)),
            Op::Replay { id, reply } => done!(reply, self.replay(&id, now)),
            Op::Sweep {
                known,
                retention,
                reply,
            } => done!(reply, self.sweep(&known, &retention, now)),
            Op::Receipt { receipt, reply } => done!(reply, self.record_receipt(&receipt, now)),
            Op::Purge { retention, reply } => done!(reply, self.purge(&retention, now)),
            Op::MoveDue {
                channel,
                how,
                limit,
                reply,
            } => done!(reply, self.move_due(&channel, &how, limit, now)),
            Op::Ping { reply } => done!(reply, Ok(())),
        }
    }

    fn enqueue(&self, items: &[NewNotification]) -> Result<Vec<Enqueued>> {
        let mut out = Vec::with_capacity(items.len());
        for n in items {
            out.push(self.insert(n, None)?);
        }
        Ok(out)
    }

    fn insert(&self, n: &NewNotification, parent: Option<&str>) -> Result<Enqueued> {
        let data = n.data.as_ref().map(serde_json::Value::to_string);
        let fallback = if n.fallback.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&n.fallback)
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
            )
        };
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO notifications (id, channel, recipient, subject, body, html, data,
                     priority, run_at, expires_at, created_at, updated_at, idempotency_key,
                     content_hash, fallback, parent_id, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14, ?15, ?16)
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

    fn claim(&self, channel: &str, limit: usize, now: i64, lease_ms: i64) -> Result<Vec<Claimed>> {
        let until = now.saturating_add(lease_ms);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(CLAIM)?;
        let rows = stmt.query_map(params![self.owner, until, now, channel, limit], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, u32>(8)?,
                r.get::<_, Option<i64>>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, i64>(11)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                channel,
                to,
                subject,
                body,
                html,
                data,
                created_at,
                attempt,
                expires_at,
                tried,
                rank,
            ) = row?;
            let tried = tried
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            // A row with unreadable data is still claimed and sent without it, never stuck.
            let data = data.and_then(|d| serde_json::from_str(&d).ok());
            out.push((
                rank,
                Claimed {
                    message: notifyd_channels::Message {
                        id,
                        channel,
                        to,
                        subject,
                        body,
                        html,
                        data,
                        created_at: std::time::UNIX_EPOCH
                            + std::time::Duration::from_millis(
                                u64::try_from(created_at).unwrap_or(0),
                            ),
                    },
                    attempt,
                    expires_at_ms: expires_at,
                    tried,
                },
            ));
        }
        // Stable: within a priority, ids the daemon assigns (UUIDv7) are in creation order.
        out.sort_by_key(|(rank, _)| *rank);
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    fn complete(&self, completions: &[Completion], now: i64) -> Result<()> {
        for c in completions {
            if let Some(rec) = &c.record {
                self.conn
                    .prepare_cached(
                        "INSERT INTO attempts (notification_id, attempt, started_at, latency_ms,
                             outcome, code, error, provider_id, decision, channel)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                                 (SELECT channel FROM notifications WHERE id = ?1))",
                    )?
                    .execute(params![
                        c.id,
                        c.attempt,
                        rec.started_at_ms,
                        rec.latency_ms,
                        rec.outcome,
                        rec.code,
                        rec.error,
                        rec.provider_id,
                        rec.decision,
                    ])?;
            }
            // Fenced: only the holder of this attempt's lease may move the row on.
            const FENCE: &str =
                "WHERE id = ?1 AND attempts = ?2 AND lease_owner = ?3 AND state = 'sending'";
            let changed = match &c.outcome {
                                Outcome::Delivered { provider_id } => {
                    let changed = self
                        .conn
                        .prepare_cached(&format!(
                            "UPDATE notifications SET state = 'delivered', provider_id = ?4,
                                 lease_owner = NULL, last_code = NULL, last_error = NULL, updated_at = ?5
                             {FENCE}"
                        ))?
                        .execute(params![c.id, c.attempt, self.owner, provider_id, now])?;
                    if changed == 1
                        && let Some(pid) = provider_id
                    {
                        self.attach_early_receipts(&c.id, pid, now)?;
                    }
                    changed
                }
                Outcome::Retry {
                    run_at_ms,
                    refund_attempt,
                    code,
                    error,
                } => self
                    .conn
                    .prepare_cached(&format!(
                        "UPDATE notifications SET state = 'queued', run_at = ?4,
                             attempts = attempts - ?5, lease_owner = NULL, last_code = ?6,
                             last_error = ?7, updated_at = ?8
                         {FENCE}"
                    ))?
                    .execute(params![
                        c.id,
                        c.attempt,
                        self.owner,
                        run_at_ms,
                        i64::from(*refund_attempt),
                        code,
                        error,
                        now
                    ])?,
                Outcome::Finish {
                    state,
                    code,
                    error,
                    fallback,
                } => {
                    let changed = self
                        .conn
                        .prepare_cached(&format!(
                            "UPDATE notifications SET state = ?4, lease_owner = NULL, last_code = ?5,
                                 last_error = ?6, updated_at = ?7
                             {FENCE}"
                        ))?
                        .execute(params![c.id, c.attempt, self.owner, state.as_str(), code, error, now])?;
                    if changed == 1 && *fallback {
                        self.spawn_fallback(&c.id, now)?;
                    }
                    changed
                }
                Outcome::Reroute {
                    channel,
                    code,
                    error,
                } => self
                    .conn
                    .prepare_cached(&format!(
                        "UPDATE notifications SET tried = json_insert(coalesce(tried, '[]'), '$[#]', channel),
                             channel = ?4, state = 'queued', attempts = 0, run_at = ?5,
                             lease_owner = NULL, last_code = ?6, last_error = ?7, updated_at = ?5
                         {FENCE}"
                    ))?
                    .execute(params![c.id, c.attempt, self.owner, channel, now, code, error])?,
                Outcome::Release => self
                    .conn
                    .prepare_cached(&format!(
                        "UPDATE notifications SET state = 'queued', run_at = ?4,
                             attempts = attempts - 1, lease_owner = NULL, updated_at = ?4
                         {FENCE}"
                    ))?
                    .execute(params![c.id, c.attempt, self.owner, now])?,
            };
            if changed == 0 {
                tracing::warn!(notification_id = %c.id, attempt = c.attempt,
                    "Completion ignored: the lease was lost to another dispatcher.");
            }
        }
        Ok(())
    }

    /// Queues the first fallback route of a notification that ended badly, carrying the rest.
    fn spawn_fallback(&self, parent: &str, now: i64) -> Result<()> {
        let (fallback, subject, body, html, data, priority, expires_at, created_at) = self
            .conn
            .prepare_cached(
                "SELECT fallback, subject, body, html, data, priority, expires_at, created_at
                 FROM notifications WHERE id = ?1",
            )?
            .query_row(params![parent], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
        let mut routes: Vec<FallbackRoute> = match fallback {
            Some(f) => serde_json::from_str(&f)
                .map_err(|e| StoreError::Internal(format!("bad fallback JSON: {e}")))?,
            None => return Ok(()),
        };
        if routes.is_empty() {
            return Ok(());
        }
        let next = routes.remove(0);
        let content = next.content.unwrap_or_else(|| Content {
            subject,
            body,
            html,
            data: data.and_then(|d| serde_json::from_str(&d).ok()),
        });
        let child = NewNotification {
            id: uuid::Uuid::now_v7().to_string(),
            channel: next.target.channel,
            to: next.target.to,
            subject: content.subject,
            body: content.body,
            html: content.html,
            data: content.data,
            priority: priority.parse().map_err(StoreError::Internal)?,
            run_at_ms: now,
            expires_at_ms: expires_at,
            created_at_ms: created_at.max(0).min(now),
            idempotency_key: Some(format!("fallback:{parent}")),
            content_hash: String::new(),
            fallback: routes,
            source: None,
        };
        self.insert(&child, Some(parent))?;
        Ok(())
    }

    fn cancel(&self, id: &str, now: i64) -> Result<Transition> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE notifications SET state = 'cancelled', updated_at = ?2
                 WHERE id = ?1 AND state = 'queued'",
            )?
            .execute(params![id, now])?;
        self.transition(id, changed, State::Cancelled)
    }

    fn replay(&self, id: &str, now: i64) -> Result<Transition> {
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE notifications SET state = 'queued', attempts = 0, run_at = ?2,
                     lease_owner = NULL, updated_at = ?2
                 WHERE id = ?1 AND state = 'dead'",
            )?
            .execute(params![id, now])?;
        self.transition(id, changed, State::Queued)
    }

    fn transition(&self, id: &str, changed: usize, to: State) -> Result<Transition> {
        if changed == 1 {
            return Ok(Transition::Done(to));
        }
        let state: Option<String> = rusqlite::OptionalExtension::optional(
            self.conn
                .prepare_cached("SELECT state FROM notifications WHERE id = ?1")?
                .query_row(params![id], |r| r.get(0)),
        )?;
        match state {
            None => Ok(Transition::NotFound),
            Some(s) => Ok(Transition::Refused(
                s.parse().map_err(StoreError::Internal)?,
            )),
        }
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
            OpenBreakerMove::Defer { until_ms } => self
                .conn
                .prepare_cached(DEFER_DUE)?
                .execute(params![channel, now, until_ms, limit])?,
            OpenBreakerMove::Reroute { to } => self
                .conn
                .prepare_cached(REROUTE_DUE)?
                .execute(params![channel, now, to, limit])?,
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
                notification_id: target,
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
            notification_id: target,
            duplicate: false,
        })
    }

    /// A `failed` receipt turns a delivered notification into a failed one; nothing else
    /// changes its state.
    fn apply_receipt(
        &self,
        id: &str,
        status: ReceiptStatus,
        provider_status: &str,
        error_code: Option<&str>,
        now: i64,
    ) -> Result<()> {
        if status == ReceiptStatus::Failed {
            self.conn
                .prepare_cached(
                    "UPDATE notifications SET state = 'failed', last_code = coalesce(?2, 'undelivered'),
                         last_error = 'the provider reported the message ' || ?3, updated_at = ?4
                     WHERE id = ?1 AND state = 'delivered'",
                )?
                .execute(params![id, error_code, provider_status, now])?;
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
            let status = match status.as_str() {
                "failed" => ReceiptStatus::Failed,
                "delivered" => ReceiptStatus::Delivered,
                _ => ReceiptStatus::InProgress,
            };
            self.apply_receipt(id, status, &provider_status, code.as_deref(), now)?;
        }
        Ok(())
    }

    /// One retention batch: at most [`PURGE_BATCH`] finished notifications (with their attempts
    /// and receipts) and as many unmatched receipts. Short on purpose, so other writes never wait
    /// long; [`super::SqliteOutbox::sweep`] asks again while batches come back full.
    fn purge(&self, retention: &Retention, now: i64) -> Result<Purged> {
        let before = now - retention.finished_ms;
        let batch = i64::try_from(PURGE_BATCH).unwrap_or(i64::MAX);
        for table in ["attempts", "receipts"] {
            self.conn
                .prepare_cached(&format!(
                    "DELETE FROM {table} WHERE notification_id IN ({OLD_FINISHED})"
                ))?
                .execute(params![before, batch])?;
        }
        let notifications = self
            .conn
            .prepare_cached(&format!(
                "DELETE FROM notifications WHERE id IN ({OLD_FINISHED})"
            ))?
            .execute(params![before, batch])?;
        let receipts = self
            .conn
            .prepare_cached(
                "DELETE FROM receipts WHERE id IN (SELECT id FROM receipts
                     WHERE notification_id IS NULL AND received_at < ?1 LIMIT ?2)",
            )?
            .execute(params![now - retention.unmatched_receipts_ms, batch])?;
        Ok(Purged {
            notifications: notifications as u64,
            receipts: receipts as u64,
        })
    }

    fn sweep(&self, known: &[String], retention: &Retention, now: i64) -> Result<SweepReport> {
        let purged = self.purge(retention, now)?;
        // Bounded batches keep the writer responsive; the next sweep takes the rest.
        let expired = self
            .conn
            .prepare_cached(EXPIRE_OVERDUE)?
            .query_map(params![now], |r| {
                Ok(ExpiredRow {
                    id: r.get(0)?,
                    channel: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let known: HashSet<&str> = known.iter().map(String::as_str).collect();
        let live: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT channel FROM notifications WHERE state IN ('queued', 'sending')",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut orphaned = 0;
        for channel in live.iter().filter(|c| !known.contains(c.as_str())) {
            orphaned += self
                .conn
                .prepare_cached(
                    "UPDATE notifications SET state = 'dead', last_code = 'unknown_channel',
                         last_error = 'no channel of this name is configured', lease_owner = NULL,
                         updated_at = ?2
                     WHERE id IN (SELECT id FROM notifications
                                  WHERE channel = ?1
                                    AND (state = 'queued' OR (state = 'sending' AND run_at <= ?2))
                                  LIMIT 1000)",
                )?
                .execute(params![channel, now])?;
        }
        Ok(SweepReport {
            expired,
            orphaned: orphaned as u64,
            purged: purged.notifications,
            receipts_purged: purged.receipts,
        })
    }
}

/// Rows of each kind one retention batch deletes at most.
pub const PURGE_BATCH: usize = 500;

/// What one retention batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Finished notifications (with their attempts and receipts).
    pub notifications: u64,
    /// Receipts that never matched.
    pub receipts: u64,
}

impl Purged {
    /// Whether either kind filled its batch, so more may be waiting.
    pub fn full(&self) -> bool {
        self.notifications >= PURGE_BATCH as u64 || self.receipts >= PURGE_BATCH as u64
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
        Op::Ping { reply } => drop(reply.send(Err(err))),
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
        let writer = Writer {
            conn,
            owner: "test".into(),
            commits: Arc::default(),
        };
        let (big, big_rx) = enqueue(note("x".repeat(256 * 1024)));
        let small_note = note("small".into());
        let small_id = small_note.id.clone();
        let (small, small_rx) = enqueue(small_note);

        writer.commit_batch(&mut vec![big, small]);

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
}
