//! What several daemons on one queue share besides the queue: the rate-limit buckets of each
//! channel (and, where configured, of each recipient), and the holds a provider asked for. The
//! pacing is the gate's (`crate::policy::rate_limit`); a store keeps the state and runs the
//! reservation rule written here ([`reserve`], [`schedule`]) atomically, one statement per
//! reservation. The rule lives with the contract, not the gate, so the stores need nothing of
//! the gate's.
//!
//! A store only one process uses has nothing to share: [`super::Outbox::cluster_limits`] is
//! `None` there, and each channel keeps its in-process limiter.

use std::time::Duration;

use async_trait::async_trait;

use super::Result;
use crate::clock::WallMs;
use crate::model::{ChannelName, HoldReason};

/// Which shared bucket: a channel's, or one recipient's on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket<'a> {
    Channel(&'a ChannelName),
    Recipient {
        channel: &'a ChannelName,
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
    pub channel: ChannelName,
    pub until_ms: WallMs,
    pub because: HoldReason,
}

/// The state the daemons of one queue share for the limits that belong to a provider account.
#[async_trait]
pub trait ClusterLimits: Send + Sync + std::fmt::Debug + 'static {
    /// Reserves, in one statement, up to `want` tokens of `bucket` that come due within
    /// `within` ([`reserve`]).
    async fn reserve(
        &self,
        bucket: Bucket<'_>,
        pace: Pace,
        want: u32,
        within: Duration,
    ) -> Result<Reserved>;

    /// Holds `channel` on every daemon until `until_ms`; a longer hold already shared is kept.
    async fn hold(
        &self,
        channel: &ChannelName,
        until_ms: WallMs,
        because: HoldReason,
    ) -> Result<()>;

    /// The holds in force now.
    async fn holds(&self) -> Result<Vec<SharedHold>>;
}

/// A bucket's constants as a store shares them, in whole microseconds: what one token costs
/// (`interval_us`, rounded up, so a shared bucket is never faster than its rate) and how far
/// ahead of now the theoretical arrival time may run (`tolerance_us`, `interval · (burst − 1)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub interval_us: i64,
    pub tolerance_us: i64,
}

impl Pace {
    /// One token's cost.
    pub fn interval(self) -> Duration {
        Duration::from_micros(u64::try_from(self.interval_us).unwrap_or(0))
    }

    /// How far ahead of now the arrival time may run.
    pub fn tolerance(self) -> Duration {
        Duration::from_micros(u64::try_from(self.tolerance_us).unwrap_or(0))
    }
}

/// What one reservation of a shared bucket grants: `granted` tokens, after which the bucket's
/// theoretical arrival time is `tat_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub granted: u32,
    pub tat_us: i64,
}

/// The reservation rule of a shared bucket (the store's one statement runs exactly this): of
/// `want` tokens, those that come due by `now + within`, each advancing the theoretical arrival
/// time `tat` (`None`: no row yet, a full bucket) by one interval from `max(tat, now)`. Tokens
/// that would come later are not taken, so a reservation never spends what it cannot use.
pub fn reserve(tat_us: Option<i64>, now_us: i64, want: u32, within_us: i64, pace: Pace) -> Granted {
    let base = tat_us.unwrap_or(now_us).max(now_us);
    let limit = now_us
        .saturating_add(within_us.max(0))
        .saturating_add(pace.tolerance_us);
    let granted = if base > limit {
        0
    } else {
        let spare = (limit - base) / pace.interval_us.max(1) + 1;
        i64::from(want).min(spare)
    };
    Granted {
        granted: u32::try_from(granted).unwrap_or(0),
        tat_us: base.saturating_add(granted.saturating_mul(pace.interval_us)),
    }
}

/// When each of the `granted` tokens that brought the bucket to `tat_us` may be used, as offsets
/// from `now_us`, in order: the k-th token is due when the arrival time it advanced from is
/// within the tolerance of now (a full bucket's burst is due at once).
pub fn schedule(granted: Granted, now_us: i64, pace: Pace) -> Vec<Duration> {
    let first = granted
        .tat_us
        .saturating_sub(i64::from(granted.granted).saturating_mul(pace.interval_us));
    (0..i64::from(granted.granted))
        .map(|k| {
            let at = first
                .saturating_add(k.saturating_mul(pace.interval_us))
                .saturating_sub(pace.tolerance_us);
            Duration::from_micros(u64::try_from(at.saturating_sub(now_us)).unwrap_or(0))
        })
        .collect()
}

/// How far the arrival time `tat_us` runs ahead of `now_us` (zero: a full bucket).
pub fn ahead_of(tat_us: i64, now_us: i64) -> Duration {
    Duration::from_micros(u64::try_from(tat_us.saturating_sub(now_us)).unwrap_or(0))
}
