//! What several daemons on one queue share besides the queue: the rate-limit buckets of each
//! channel (and, where configured, of each recipient), and the holds a provider asked for. The
//! rules are [`crate::policy::rate_limit`]'s; a store only keeps the state and runs the
//! reservation rule atomically, one statement per reservation.
//!
//! A store only one process uses has nothing to share: [`super::Outbox::cluster_limits`] is
//! `None` there, and each channel keeps its in-process limiter.

use std::time::Duration;

use async_trait::async_trait;

use super::Result;
use crate::clock::WallMs;
use crate::policy::HoldReason;
use crate::policy::rate_limit::Pace;

/// Which shared bucket: a channel's, or one recipient's on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket<'a> {
    Channel(&'a str),
    Recipient {
        channel: &'a str,
        recipient: &'a str,
    },
}

/// What a reservation got: the tokens granted, each as how long from the store's now until it
/// may be used, in order; and how far the bucket's arrival time runs ahead of that now after
/// them (whence when the next token comes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub due_in: Vec<Duration>,
    pub tat_in: Duration,
}

/// A hold in force, as shared: the channel sends nothing before `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedHold {
    pub channel: String,
    pub until_ms: WallMs,
    pub because: HoldReason,
}

/// The state the daemons of one queue share for the limits that belong to a provider account.
#[async_trait]
pub trait ClusterLimits: Send + Sync + std::fmt::Debug + 'static {
    /// Reserves, in one statement, up to `want` tokens of `bucket` that come due within
    /// `within` ([`crate::policy::rate_limit::reserve`]).
    async fn reserve(
        &self,
        bucket: Bucket<'_>,
        pace: Pace,
        want: u32,
        within: Duration,
    ) -> Result<Reserved>;

    /// Holds `channel` on every daemon until `until_ms`; a longer hold already shared is kept.
    async fn hold(&self, channel: &str, until_ms: WallMs, because: HoldReason) -> Result<()>;

    /// The holds in force now.
    async fn holds(&self) -> Result<Vec<SharedHold>>;
}
