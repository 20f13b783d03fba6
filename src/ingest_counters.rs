//! The drop-in senders' request counters by [`Format`] and [`Outcome`]: counted by `ingest`,
//! read by `metrics.rs` at scrape time (its own module, so metrics does not import the ingest
//! handlers, which answer through the API's shared state that holds the counters).

use std::sync::atomic::{AtomicU64, Ordering};

/// The sender formats notifyd accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Alertmanager,
    Grafana,
    Apprise,
    Ntfy,
}

impl Format {
    /// Every format, in the order metrics list them.
    pub const ALL: [Self; 4] = [Self::Alertmanager, Self::Grafana, Self::Apprise, Self::Ntfy];

    /// The name in `source.format`, idempotency keys and the `format` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alertmanager => "alertmanager",
            Self::Grafana => "grafana",
            Self::Apprise => "apprise",
            Self::Ntfy => "ntfy",
        }
    }
}

/// What became of one ingest request, as counted in `notifyd_ingest_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// At least one new notification was stored.
    Stored,
    /// Everything it asked for was already stored (an Alertmanager replica or retry).
    Duplicate,
    /// No target of the route matched: nothing to store.
    Unrouted,
    /// Refused with a 4xx (no or a wrong token, not the sender's format, unknown route, bad
    /// signature, ...).
    Refused,
    /// The queue could not take it (5xx): the sender should retry.
    Failed,
}

impl Outcome {
    /// Every outcome, in the order metrics list them.
    pub const ALL: [Self; 5] = [
        Self::Stored,
        Self::Duplicate,
        Self::Unrouted,
        Self::Refused,
        Self::Failed,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Unrouted => "unrouted",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// Ingest requests by format and outcome.
#[derive(Debug, Default)]
pub struct IngestCounters([[AtomicU64; 5]; 4]);

impl IngestCounters {
    /// Counts one request.
    pub fn count(&self, format: Format, outcome: Outcome) {
        self.0[format as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `format` that ended in `outcome`.
    pub fn get(&self, format: Format, outcome: Outcome) -> u64 {
        self.0[format as usize][outcome as usize].load(Ordering::Relaxed)
    }
}
