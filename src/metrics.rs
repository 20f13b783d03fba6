//! Prometheus metrics, in the text exposition format. Labels are bounded: channel, outcome
//! class, state. Never recipients or ids.
//!
//! Counters live where the events happen (each channel's [`ChannelStats`], the API's accepted
//! counter); gauges (queue depth, oldest due age, breaker state) are read when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use notifyd_channels::{DeliveryError, Receipt};
use serde::Serialize;

use crate::outbox::{Outbox, Result, State};
use crate::registry::Registry;

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

    /// The samples of `notifyd_delivery_duration_seconds` for channel label `ch` (escaped):
    /// cumulative buckets, `+Inf`, sum and count.
    fn latency_samples(&self, ch: &str) -> Vec<String> {
        let mut out = Vec::with_capacity(BUCKETS.len() + 3);
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Ordering::Relaxed);
            out.push(format!(
                "notifyd_delivery_duration_seconds_bucket{{channel=\"{ch}\",le=\"{bound}\"}} {cumulative}"
            ));
        }
        // Read after the buckets: an attempt counted meanwhile keeps `+Inf` the largest.
        let count = self.latency_count.load(Ordering::Relaxed).max(cumulative);
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        out.push(format!(
            "notifyd_delivery_duration_seconds_bucket{{channel=\"{ch}\",le=\"+Inf\"}} {count}"
        ));
        out.push(format!(
            "notifyd_delivery_duration_seconds_sum{{channel=\"{ch}\"}} {sum}"
        ));
        out.push(format!(
            "notifyd_delivery_duration_seconds_count{{channel=\"{ch}\"}} {count}"
        ));
        out
    }

    /// Attempts counted with this outcome.
    pub fn count(&self, outcome: AttemptClass) -> u64 {
        self.outcomes[outcome as usize].load(Ordering::Relaxed)
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Notifications accepted through the API (new ones, not idempotent replays).
    pub accepted: AtomicU64,
    /// Verified receipts by normalized status: delivered, failed, in progress (not counting
    /// duplicates).
    receipts: [AtomicU64; 3],
    /// Requests to the inbound endpoint by [`ReceiptOutcome`].
    receipt_outcomes: [AtomicU64; 4],
    /// Ingest requests by sender format and outcome.
    pub ingest: crate::ingest::IngestCounters,
}

/// What became of a request to `POST /v1/inbound/{channel}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// Verified and attached to its notification.
    Matched,
    /// Verified and stored, waiting for its notification's provider id.
    Unmatched,
    /// Verified, but already stored: nothing changed.
    Duplicate,
    /// Unsigned, wrongly signed or stale (401).
    Refused,
}

impl ReceiptOutcome {
    const ALL: [Self; 4] = [
        Self::Matched,
        Self::Unmatched,
        Self::Duplicate,
        Self::Refused,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matched => "matched",
            Self::Unmatched => "unmatched",
            Self::Duplicate => "duplicate",
            Self::Refused => "refused",
        }
    }
}

impl Counters {
    /// Counts a verified receipt.
    pub fn receipt(&self, status: crate::outbox::ReceiptStatus) {
        use crate::outbox::ReceiptStatus as R;
        let i = match status {
            R::Delivered => 0,
            R::Failed => 1,
            R::InProgress => 2,
        };
        self.receipts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request to the inbound endpoint by what became of it.
    pub fn receipt_outcome(&self, outcome: ReceiptOutcome) {
        self.receipt_outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: its help, its type, its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[String]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for sample in samples {
        out.push_str(sample);
        out.push('\n');
    }
}

/// Renders every metric.
pub async fn render(
    registry: &Registry,
    counters: &Counters,
    outbox: &dyn Outbox,
) -> Result<String> {
    let depth = outbox.depth().await?;
    let oldest = outbox.oldest_due(&registry.names()).await?;
    let now = crate::clock::now_ms();
    let (mut attempts, mut latency, mut queue, mut age) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut breaker, mut waits, mut dead_critical) = (Vec::new(), Vec::new(), Vec::new());
    let mut expired_critical = Vec::new();
    for rt in registry.iter() {
        let ch = escape(&rt.name);
        let kind = rt.kind;
        for outcome in AttemptClass::ALL {
            attempts.push(format!(
                "notifyd_attempts_total{{channel=\"{ch}\",kind=\"{kind}\",outcome=\"{}\"}} {}",
                outcome.as_str(),
                rt.stats.count(outcome)
            ));
        }
        latency.extend(rt.stats.latency_samples(&ch));
        for state in [State::Queued, State::Sending, State::Dead] {
            let n: u64 = depth
                .iter()
                .filter(|d| d.channel == rt.name && d.state == state)
                .map(|d| d.count)
                .sum();
            queue.push(format!(
                "notifyd_queue_depth{{channel=\"{ch}\",state=\"{state}\"}} {n}"
            ));
        }
        let oldest_ms = oldest
            .iter()
            .find(|(c, _)| *c == rt.name)
            .map(|(_, at)| *at);
        let secs = oldest_ms
            .map(|at| (now - at).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        age.push(format!(
            "notifyd_queue_oldest_due_seconds{{channel=\"{ch}\"}} {secs}"
        ));
        let state = match rt.gate.breaker().view().state {
            "closed" => 0,
            "half_open" => 1,
            _ => 2,
        };
        breaker.push(format!("notifyd_breaker_state{{channel=\"{ch}\"}} {state}"));
        waits.push(format!(
            "notifyd_rate_limit_waits_total{{channel=\"{ch}\"}} {}",
            rt.gate.limiter().waits()
        ));
        dead_critical.push(format!(
            "notifyd_dead_critical_total{{channel=\"{ch}\"}} {}",
            rt.health().dead_critical
        ));
        expired_critical.push(format!(
            "notifyd_expired_critical_total{{channel=\"{ch}\"}} {}",
            rt.health().expired_critical
        ));
    }
    let mut out = String::with_capacity(8192);
    let accepted = vec![format!(
        "notifyd_accepted_total {}",
        counters.accepted.load(Ordering::Relaxed)
    )];
    family(
        &mut out,
        "notifyd_accepted_total",
        "counter",
        "Notifications accepted through the API.",
        &accepted,
    );
    let mut ingest = Vec::new();
    for format in crate::ingest::Format::ALL {
        for outcome in crate::ingest::Outcome::ALL {
            ingest.push(format!(
                "notifyd_ingest_requests_total{{format=\"{}\",outcome=\"{}\"}} {}",
                format.as_str(),
                outcome.as_str(),
                counters.ingest.get(format, outcome)
            ));
        }
    }
    family(
        &mut out,
        "notifyd_ingest_requests_total",
        "counter",
        "Requests to the ingest endpoints by sender format (alertmanager, grafana, apprise, ntfy) and outcome (stored, duplicate, unrouted, refused, failed).",
        &ingest,
    );
    let receipts: Vec<String> = ["delivered", "failed", "in_progress"]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "notifyd_receipts_total{{status=\"{s}\"}} {}",
                counters.receipts[i].load(Ordering::Relaxed)
            )
        })
        .collect();
    family(
        &mut out,
        "notifyd_receipts_total",
        "counter",
        "Verified delivery receipts by status.",
        &receipts,
    );
    let outcomes: Vec<String> = ReceiptOutcome::ALL
        .iter()
        .map(|o| {
            format!(
                "notifyd_inbound_receipts_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                counters.receipt_outcomes[*o as usize].load(Ordering::Relaxed)
            )
        })
        .collect();
    family(
        &mut out,
        "notifyd_inbound_receipts_total",
        "counter",
        "Requests to /v1/inbound by outcome: matched, unmatched, duplicate, refused (bad signature).",
        &outcomes,
    );
    family(
        &mut out,
        "notifyd_attempts_total",
        "counter",
        "Delivery attempts by channel and outcome class.",
        &attempts,
    );
    family(
        &mut out,
        "notifyd_delivery_duration_seconds",
        "histogram",
        "How long providers took to answer a send.",
        &latency,
    );
    family(
        &mut out,
        "notifyd_queue_depth",
        "gauge",
        "Notifications per channel in a live or dead state.",
        &queue,
    );
    family(
        &mut out,
        "notifyd_queue_oldest_due_seconds",
        "gauge",
        "How long the oldest due notification of a channel has waited (0: none due).",
        &age,
    );
    if let Some(trips) = outbox.round_trips() {
        family(
            &mut out,
            "notifyd_queue_round_trips_total",
            "counter",
            "Round trips this daemon made to the PostgreSQL queue (statements, BEGIN and COMMIT, connection checks).",
            &[format!("notifyd_queue_round_trips_total {trips}")],
        );
    }
    family(
        &mut out,
        "notifyd_breaker_state",
        "gauge",
        "Circuit breaker: 0 closed, 1 half-open, 2 open.",
        &breaker,
    );
    family(
        &mut out,
        "notifyd_rate_limit_waits_total",
        "counter",
        "Times a send waited for a rate-limit token.",
        &waits,
    );
    family(
        &mut out,
        "notifyd_dead_critical_total",
        "counter",
        "Notifications of critical channels that ended dead (alert on any increase).",
        &dead_critical,
    );
    family(
        &mut out,
        "notifyd_expired_critical_total",
        "counter",
        "Notifications of critical channels whose expires_at passed unsent (alert on any increase).",
        &expired_critical,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn latency_buckets_are_cumulative_and_inf_counts_every_attempt() {
        let stats = ChannelStats::default();
        for ms in [3, 30, 40_000] {
            stats.attempt(AttemptClass::Delivered, Duration::from_millis(ms));
        }
        let samples = stats.latency_samples("sms");
        let value = |le: &str| {
            let key =
                format!("notifyd_delivery_duration_seconds_bucket{{channel=\"sms\",le=\"{le}\"}} ");
            samples
                .iter()
                .find_map(|s| s.strip_prefix(&key))
                .unwrap()
                .to_owned()
        };
        assert_eq!(value("0.005"), "1");
        assert_eq!(value("0.025"), "1");
        assert_eq!(value("0.05"), "2");
        assert_eq!(value("30"), "2");
        assert_eq!(value("+Inf"), "3");
        assert!(
            samples
                .contains(&"notifyd_delivery_duration_seconds_count{channel=\"sms\"} 3".to_owned())
        );
        assert!(
            samples.contains(
                &"notifyd_delivery_duration_seconds_sum{channel=\"sms\"} 40.033".to_owned()
            )
        );
        assert_eq!(stats.count(AttemptClass::Delivered), 3);
        assert_eq!(stats.count(AttemptClass::Transient), 0);
    }
}
