//! The durable queue. Everything accepted is written here before anyone is told "accepted", and
//! the table is the truth about every notification's state.
//!
//! [`Outbox`] is the store contract the API, CLI and dispatcher use; [`sqlite`] implements it
//! for one host, [`postgres`] for several daemons sharing one queue.

mod clock;
pub(crate) mod completion;
pub(crate) mod failover;
pub(crate) mod fallback;
mod history;
pub(crate) mod limits;
pub(crate) mod postgres;
pub(crate) mod receipt;
pub(crate) mod sqlite;
pub(crate) mod sweep;
pub(crate) mod transition;

use std::time::Duration;

use async_trait::async_trait;

/// The queue's vocabulary (its own module, `crate::model`, since the rules speak it too): the
/// store contract is written in it, and the integration tests reach it here.
pub use crate::model::*;
pub use clock::{Clock, ManualClock};
pub use history::*;
/// The shared limits' store (PostgreSQL): a bucket, a reservation, a hold shared between daemons.
pub use limits::{Bucket, Reserved, SharedHold};
/// The PostgreSQL queue, shared by several daemons.
pub use postgres::{PgOptions, PgOutbox};
/// The SQLite queue of one host.
pub use sqlite::{SqliteOptions, SqliteOutbox};

use crate::recipients::Preferences;

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot take writes right now (disk full, read-only, I/O error, locked, closed):
    /// nothing of the request was committed.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or a corrupt row.
    #[error("queue error: {0}")]
    Internal(String),
}

/// Wakes this daemon's channel loops: the named channel's, or every one for `None` (anything may
/// be due, after a connection that carried the hints was lost).
pub type WakeUp = std::sync::Arc<dyn Fn(Option<&ChannelName>) + Send + Sync>;

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The queue contract. Writes are durable when they return `Ok`.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Stores new notifications in one commit; one result per item, in order.
    async fn enqueue(&self, items: Vec<NewNotification>) -> Result<Vec<Enqueued>>;

    /// The notification that holds `key`, if any: lets a replay be answered even when the
    /// request would no longer be accepted as new (its `expires_at` has passed, say).
    async fn find_key(&self, key: &str) -> Result<Option<KeyHolder>>;

    /// Leases up to `limit` due notifications of `channel` (highest priority, then earliest due),
    /// incrementing their attempt counter and raising their [`LeaseToken`]. Expired leases count
    /// as due.
    async fn claim(
        &self,
        channel: &ChannelName,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>>;

    /// Writes attempt outcomes back, each as [`completion::plan`] says. A completion whose lease
    /// was lost (its [`LeaseToken`] is no longer the row's: another claim came after it, also
    /// after a replay, refund or failover) changes nothing but the attempt history.
    async fn complete(&self, completions: Vec<Completion>) -> Result<()>;

    /// One notification with its attempt history.
    async fn get(&self, id: &NotificationId) -> Result<Option<NotificationView>>;

    /// Cancels a notification that is still queued ([`transition::Request::Cancel`]).
    async fn cancel(&self, id: &NotificationId) -> Result<Transition>;

    /// Dead letters, newest first, optionally of one channel.
    async fn dead_letters(
        &self,
        channel: Option<&ChannelName>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// Puts a dead letter back in the queue, due now, with a fresh attempt budget
    /// ([`transition::Request::Replay`]).
    async fn replay(&self, id: &NotificationId) -> Result<Transition>;

    /// Counts of live (`queued`, `sending`) and `dead` notifications per channel.
    async fn depth(&self) -> Result<Vec<Depth>>;

    /// For each of `channels` that has notifications due now, the due time of the oldest (Unix
    /// ms).
    async fn oldest_due(&self, channels: &[ChannelName]) -> Result<Vec<(ChannelName, i64)>>;

    /// Defers or fails over up to `limit` due, queued notifications of `channel` whose breaker is
    /// open; returns how many moved.
    async fn move_due(
        &self,
        channel: &ChannelName,
        how: OpenBreakerMove,
        limit: usize,
    ) -> Result<u64>;

    /// Expires overdue queued rows, dead-letters rows of channels not in `known_channels`, and
    /// purges what `retention` says is old, each in bounded batches, as [`sweep`] rules; purging goes on batch after batch
    /// (each its own short write) while batches come back full, up to a bound per sweep.
    async fn sweep(
        &self,
        known_channels: &[ChannelName],
        retention: &Retention,
    ) -> Result<SweepReport>;

    /// Stores a verified receipt and applies it to its notification if that is known yet (else
    /// it waits for the provider id to be recorded). Only a notification of the receipt's own
    /// channel matches; a receipt already stored (same channel, provider id and provider status)
    /// is not stored or applied again.
    async fn record_receipt(&self, receipt: InboundReceipt) -> Result<RecordedReceipt>;

    /// Writes timeline events on their own (a rule that changes a row writes its event in the
    /// same transaction instead). Events of unknown notifications are stored all the same.
    async fn record_events(&self, events: Vec<RuleEvent>) -> Result<()>;
    /// Acknowledges the escalation chain `id` belongs to
    /// ([`crate::rules::escalation::plan_ack`]): marks the chain's first notification and
    /// cancels its step waiting in the queue, in one write. A step claimed before that write is
    /// being sent; none is queued after it.
    async fn acknowledge(&self, id: &NotificationId, source: AckSource) -> Result<Acknowledged>;

    /// Succeeds when a write transaction can be started now.
    async fn check_writable(&self) -> Result<()>;

    /// One page of the history, newest first; read beside the writer, never through it.
    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage>;

    /// What a notification says (subject, bodies, data), if it exists.
    async fn content(&self, id: &NotificationId) -> Result<Option<Content>>;

    /// Stores a recipient's preferences under `address` (already normalized,
    /// [`crate::recipients::normalize`]), replacing any it had.
    async fn put_preferences(&self, address: &str, prefs: &Preferences) -> Result<()>;

    /// The stored preferences of those of `addresses` (normalized) that have any: one read for a
    /// whole claim's recipients.
    async fn preferences(&self, addresses: &[String]) -> Result<Vec<(String, Preferences)>>;

    /// Forgets a recipient's preferences; whether there were any.
    async fn delete_preferences(&self, address: &str) -> Result<bool>;

    /// Adds `channel` to the recipient's `opted_out` (creating its preferences if it had none),
    /// and records `because` on its notification's timeline, in one write: the unsubscribe
    /// link. Returns the preferences now stored.
    async fn opt_out(
        &self,
        address: &str,
        channel: &ChannelName,
        because: Option<RuleEvent>,
    ) -> Result<Preferences>;
    /// The items still waiting in digest `digest_id` (queued), oldest first.
    async fn digest_items(&self, digest_id: &NotificationId) -> Result<Vec<DigestItem>> {
        let _ = digest_id;
        Err(StoreError::Internal("this store keeps no digests".into()))
    }

    /// Puts every dead letter of `channel` back in the queue; returns how many. Each is replayed
    /// once: one that dies again meanwhile is left for the next call.
    async fn replay_channel(&self, channel: &ChannelName) -> Result<u64> {
        let mut seen = std::collections::HashSet::new();
        let mut replayed = 0;
        loop {
            let batch = self.dead_letters(Some(channel), 500).await?;
            let fresh: Vec<_> = batch
                .into_iter()
                .filter(|d| seen.insert(d.id.clone()))
                .collect();
            if fresh.is_empty() {
                return Ok(replayed);
            }
            for d in fresh {
                // Refused: someone else replayed it meanwhile.
                if self.replay(&d.id).await? == Transition::Done(State::Queued) {
                    replayed += 1;
                }
            }
        }
    }

    /// The time this store judges rows due by (its [`Clock`]): the wall clock, or a test's.
    fn now_ms(&self) -> i64 {
        crate::clock::now_ms()
    }

    /// Round trips made to a database server so far, for a store that has one (`/metrics`'
    /// `notifyd_queue_round_trips_total`, which `notifyd bench` divides by what was delivered).
    /// An embedded store has none to count (the default).
    fn round_trips(&self) -> Option<u64> {
        None
    }

    /// Calls `wake` when another process queued work for a channel, so its loop claims at once
    /// instead of at its next poll. Only a hint: the loops poll anyway. A store only this
    /// process writes to has nothing to say (the default).
    fn wake_on_remote_work(&self, wake: WakeUp) {
        let _ = wake;
    }

    /// The rate limits and holds this store shares between the daemons on it; `None` (the
    /// default) for a store only this process uses, whose limits stay in process.
    fn cluster_limits(&self) -> Option<std::sync::Arc<dyn limits::ClusterLimits>> {
        None
    }
}
