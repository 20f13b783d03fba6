//! Each channel's attempt counters and latency histogram, counted where attempts end (the
//! dispatcher) and read by `/metrics` at scrape time; the outcome classes they are counted by.
//! Its own module so the registry that owns one per channel and the metrics that read them do
//! not import each other.

use std::sync::atomic::{AtomicU64, Ordering};

use notifyd_channels::{DeliveryError, Receipt};
use serde::Serialize;

/// How an attempt that reached the provider ended: the `outcome` label of
/// `notifyd_attempts_total`, and the `outcome` of its attempt record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptClass {
    Delivered,
    Transient,
    RateLimited,
    InvalidRecipient,
    Permanent,
    ChannelFault,
}

impl AttemptClass {
    /// Every class, in the order they are exposed.
    pub const ALL: [Self; 6] = [
        Self::Delivered,
        Self::Transient,
        Self::RateLimited,
        Self::InvalidRecipient,
        Self::Permanent,
        Self::ChannelFault,
    ];

    /// The class of a send's result.
    pub fn of(result: &std::result::Result<Receipt, DeliveryError>) -> Self {
        match result {
            Ok(_) => Self::Delivered,
            Err(DeliveryError::Transient { .. }) => Self::Transient,
            Err(DeliveryError::RateLimited { .. }) => Self::RateLimited,
            Err(DeliveryError::InvalidRecipient { .. }) => Self::InvalidRecipient,
            Err(DeliveryError::Permanent { .. }) => Self::Permanent,
            Err(DeliveryError::ChannelFault { .. }) => Self::ChannelFault,
        }
    }

    /// The label, as in the API and the attempt records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Transient => "transient",
            Self::RateLimited => "rate_limited",
            Self::InvalidRecipient => "invalid_recipient",
            Self::Permanent => "permanent",
            Self::ChannelFault => "channel_fault",
        }
    }
}

impl Serialize for AttemptClass {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Upper bounds of the delivery latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A channel's counters.
#[derive(Debug, Default)]
pub struct ChannelStats {
    outcomes: [AtomicU64; 6],
    /// Attempts whose latency fell in `(BUCKETS[i-1], BUCKETS[i]]`: one counter per attempt,
    /// made cumulative when scraped.
    latency_buckets: [AtomicU64; 12],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl ChannelStats {
    /// Counts one attempt with its outcome class and how long the provider took.
    pub fn attempt(&self, outcome: AttemptClass, latency: std::time::Duration) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The latency histogram now: per-bucket counts (the last one past every bound), sum and
    /// count.
    pub(crate) fn latency(&self) -> Latency {
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
            .collect();
        let bucketed: u64 = buckets.iter().map(|(_, n)| n).sum();
        // Read after the buckets: an attempt counted meanwhile keeps `+Inf` the largest.
        let count = self.latency_count.load(Ordering::Relaxed).max(bucketed);
        buckets.push((f64::INFINITY, count - bucketed));
        Latency {
            buckets,
            count,
            sum: self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Attempts counted with this outcome.
    pub fn count(&self, outcome: AttemptClass) -> u64 {
        self.outcomes[outcome as usize].load(Ordering::Relaxed)
    }
}

/// A latency histogram read at scrape time.
#[derive(Debug)]
pub(crate) struct Latency {
    /// `(upper bound, attempts in this bucket alone)`, the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}
