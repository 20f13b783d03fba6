//! Prometheus metrics, in the text exposition format (version 0.0.4) as prometheus-client
//! writes it. Labels are bounded: channel, outcome class, state. Never recipients or ids.
//!
//! Counters live where the events happen (each channel's
//! [`crate::channel_stats::ChannelStats`], the API's accepted counter); gauges (queue depth, oldest due age, breaker state) are read when scraped.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::channel_stats::{AttemptClass, Latency};
use crate::outbox::{ChannelName, Outbox, Result, State};
use crate::registry::Registry;

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
    pub ingest: crate::ingest_counters::IngestCounters,
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

/// One channel's values at scrape time.
#[derive(Debug)]
struct ChannelSample {
    name: ChannelName,
    kind: &'static str,
    attempts: Vec<(AttemptClass, u64)>,
    latency: Latency,
    queue: Vec<(State, u64)>,
    oldest_due_seconds: f64,
    /// 0 closed, 1 half-open, 2 open.
    breaker: i64,
    rate_limit_waits: u64,
    dead_critical: u64,
    expired_critical: u64,
}

/// Every value one scrape exposes, read first (the queue's are async), then encoded by
/// prometheus-client as one [`Collector`].
#[derive(Debug)]
struct Scrape {
    accepted: u64,
    ingest: Vec<(&'static str, &'static str, u64)>,
    receipts: Vec<(&'static str, u64)>,
    inbound: Vec<(&'static str, u64)>,
    channels: Vec<ChannelSample>,
    /// Round trips to the queue, for a backend that counts them (PostgreSQL).
    round_trips: Option<u64>,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// The labels of a per-channel sample.
fn by_channel(c: &ChannelSample) -> Labels<'_> {
    vec![("channel", c.name.as_str())]
}

/// One metric family of `kind` with these `(labels, value)` samples.
fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    (name, help, kind): (&str, &str, MetricType),
    samples: impl IntoIterator<Item = (Labels<'a>, M)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter family's name and help.
fn counter<'h>(name: &'h str, help: &'h str) -> (&'h str, &'h str, MetricType) {
    (name, help, MetricType::Counter)
}

/// A gauge family's name and help.
fn gauge<'h>(name: &'h str, help: &'h str) -> (&'h str, &'h str, MetricType) {
    (name, help, MetricType::Gauge)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        let channels = &self.channels;
        let accepted = e.encode_descriptor(
            "notifyd_accepted",
            "Notifications accepted through the API.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.accepted).encode(accepted)?;
        family(
            e,
            counter(
                "notifyd_ingest_requests",
                "Requests to the ingest endpoints by sender format (alertmanager, grafana, apprise, ntfy) and outcome (stored, duplicate, unrouted, refused, failed).",
            ),
            self.ingest.iter().map(|(format, outcome, n)| {
                (
                    vec![("format", *format), ("outcome", *outcome)],
                    ConstCounter::new(*n),
                )
            }),
        )?;
        family(
            e,
            counter("notifyd_receipts", "Verified delivery receipts by status."),
            self.receipts
                .iter()
                .map(|(s, n)| (vec![("status", *s)], ConstCounter::new(*n))),
        )?;
        family(
            e,
            counter(
                "notifyd_inbound_receipts",
                "Requests to /v1/inbound by outcome: matched, unmatched, duplicate, refused (bad signature).",
            ),
            self.inbound
                .iter()
                .map(|(o, n)| (vec![("outcome", *o)], ConstCounter::new(*n))),
        )?;
        family(
            e,
            counter(
                "notifyd_attempts",
                "Delivery attempts by channel and outcome class.",
            ),
            channels.iter().flat_map(|c| {
                c.attempts.iter().map(|(outcome, n)| {
                    let labels = vec![
                        ("channel", c.name.as_str()),
                        ("kind", c.kind),
                        ("outcome", outcome.as_str()),
                    ];
                    (labels, ConstCounter::new(*n))
                })
            }),
        )?;
        let mut latency = e.encode_descriptor(
            "notifyd_delivery_duration_seconds",
            "How long providers took to answer a send.",
            None,
            MetricType::Histogram,
        )?;
        for c in channels {
            let l = &c.latency;
            latency
                .encode_family(&by_channel(c))?
                .encode_histogram::<NoLabelSet>(l.sum, l.count, &l.buckets, None)?;
        }
        family(
            e,
            gauge(
                "notifyd_queue_depth",
                "Notifications per channel in a live or dead state.",
            ),
            channels.iter().flat_map(|c| {
                c.queue.iter().map(|(state, n)| {
                    (
                        vec![("channel", c.name.as_str()), ("state", state.as_str())],
                        ConstGauge::new(*n),
                    )
                })
            }),
        )?;
        family(
            e,
            gauge(
                "notifyd_queue_oldest_due_seconds",
                "How long the oldest due notification of a channel has waited (0: none due).",
            ),
            channels
                .iter()
                .map(|c| (by_channel(c), ConstGauge::new(c.oldest_due_seconds))),
        )?;
        if let Some(trips) = self.round_trips {
            let family = e.encode_descriptor(
                "notifyd_queue_round_trips",
                "Round trips this daemon made to the PostgreSQL queue (statements, BEGIN and COMMIT, connection checks).",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(trips).encode(family)?;
        }
        family(
            e,
            gauge(
                "notifyd_breaker_state",
                "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            ),
            channels
                .iter()
                .map(|c| (by_channel(c), ConstGauge::new(c.breaker))),
        )?;
        family(
            e,
            counter(
                "notifyd_rate_limit_waits",
                "Times a send waited for a rate-limit token.",
            ),
            channels
                .iter()
                .map(|c| (by_channel(c), ConstCounter::new(c.rate_limit_waits))),
        )?;
        family(
            e,
            counter(
                "notifyd_dead_critical",
                "Notifications of critical channels that ended dead (alert on any increase).",
            ),
            channels
                .iter()
                .map(|c| (by_channel(c), ConstCounter::new(c.dead_critical))),
        )?;
        family(
            e,
            counter(
                "notifyd_expired_critical",
                "Notifications of critical channels whose expires_at passed unsent (alert on any increase).",
            ),
            channels
                .iter()
                .map(|c| (by_channel(c), ConstCounter::new(c.expired_critical))),
        )
    }
}

impl Scrape {
    /// The Prometheus text exposition (version 0.0.4) of these values.
    fn text(self) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail; an encoder error would be a bug in a label.
        if let Err(e) = prometheus_text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "Could not encode the metrics.");
        }
        out
    }
}

/// The `Content-Type` of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Renders every metric in the Prometheus text format.
pub(crate) async fn render(
    registry: &Registry,
    counters: &Counters,
    outbox: &dyn Outbox,
) -> Result<String> {
    let depth = outbox.depth().await?;
    let oldest = outbox.oldest_due(&registry.names()).await?;
    let now = crate::clock::now_ms();
    let channels = registry
        .iter()
        .map(|rt| {
            let oldest_ms = oldest
                .iter()
                .find(|(c, _)| *c == rt.name)
                .map(|(_, at)| *at);
            let health = rt.health();
            ChannelSample {
                name: rt.name.clone(),
                kind: rt.kind,
                attempts: AttemptClass::ALL
                    .iter()
                    .map(|o| (*o, rt.stats.count(*o)))
                    .collect(),
                latency: rt.stats.latency(),
                queue: [State::Queued, State::Sending, State::Dead]
                    .into_iter()
                    .map(|state| {
                        let n = depth
                            .iter()
                            .filter(|d| d.channel == rt.name && d.state == state)
                            .map(|d| d.count)
                            .sum();
                        (state, n)
                    })
                    .collect(),
                oldest_due_seconds: oldest_ms
                    .map(|at| crate::clock::elapsed_ms(now, at) as f64 / 1000.0)
                    .unwrap_or(0.0),
                breaker: match rt.gate.breaker().view().state {
                    "closed" => 0,
                    "half_open" => 1,
                    _ => 2,
                },
                rate_limit_waits: rt.gate.limiter().waits(),
                dead_critical: health.dead_critical,
                expired_critical: health.expired_critical,
            }
        })
        .collect();
    let ingest = crate::ingest_counters::Format::ALL
        .into_iter()
        .flat_map(|format| {
            crate::ingest_counters::Outcome::ALL
                .into_iter()
                .map(move |outcome| {
                    (
                        format.as_str(),
                        outcome.as_str(),
                        counters.ingest.get(format, outcome),
                    )
                })
        })
        .collect();
    let receipts = ["delivered", "failed", "in_progress"]
        .into_iter()
        .zip(&counters.receipts)
        .map(|(status, n)| (status, n.load(Ordering::Relaxed)))
        .collect();
    let inbound = ReceiptOutcome::ALL
        .iter()
        .map(|o| {
            (
                o.as_str(),
                counters.receipt_outcomes[*o as usize].load(Ordering::Relaxed),
            )
        })
        .collect();
    Ok(Scrape {
        accepted: counters.accepted.load(Ordering::Relaxed),
        ingest,
        receipts,
        inbound,
        channels,
        round_trips: outbox.round_trips(),
    }
    .text())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::channel_stats::ChannelStats;

    fn one_channel(stats: &ChannelStats) -> Scrape {
        Scrape {
            accepted: 2,
            ingest: vec![],
            receipts: vec![],
            inbound: vec![],
            round_trips: Some(7),
            channels: vec![ChannelSample {
                name: "sms \"eu\"".into(),
                kind: "twilio",
                attempts: AttemptClass::ALL
                    .iter()
                    .map(|o| (*o, stats.count(*o)))
                    .collect(),
                latency: stats.latency(),
                queue: vec![(State::Queued, 4)],
                oldest_due_seconds: 1.5,
                breaker: 2,
                rate_limit_waits: 0,
                dead_critical: 0,
                expired_critical: 0,
            }],
        }
    }

    #[test]
    fn latency_buckets_are_cumulative_and_inf_counts_every_attempt() {
        let stats = ChannelStats::default();
        for ms in [3, 30, 40_000] {
            stats.attempt(AttemptClass::Delivered, Duration::from_millis(ms));
        }
        let text = one_channel(&stats).text();
        let value = |le: &str| {
            let key = format!(
                "notifyd_delivery_duration_seconds_bucket{{channel=\"sms \\\"eu\\\"\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|s| s.strip_prefix(&key))
                .unwrap_or_else(|| panic!("{key} in {text}"))
                .to_owned()
        };
        assert_eq!(value("0.005"), "1");
        assert_eq!(value("0.025"), "1");
        assert_eq!(value("0.05"), "2");
        assert_eq!(value("30"), "2");
        assert_eq!(value("+Inf"), "3");
        assert!(
            text.contains(
                "notifyd_delivery_duration_seconds_count{channel=\"sms \\\"eu\\\"\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "notifyd_delivery_duration_seconds_sum{channel=\"sms \\\"eu\\\"\"} 40.033\n"
            ),
            "{text}"
        );
        assert_eq!(stats.count(AttemptClass::Delivered), 3);
        assert_eq!(stats.count(AttemptClass::Transient), 0);
    }

    #[test]
    fn names_labels_and_types_are_the_prometheus_text_ones() {
        let stats = ChannelStats::default();
        stats.attempt(AttemptClass::Transient, Duration::from_millis(5));
        let text = one_channel(&stats).text();
        for line in [
            "# TYPE notifyd_accepted_total counter",
            "notifyd_accepted_total 2",
            "# TYPE notifyd_attempts_total counter",
            "notifyd_attempts_total{channel=\"sms \\\"eu\\\"\",kind=\"twilio\",outcome=\"transient\"} 1",
            "notifyd_attempts_total{channel=\"sms \\\"eu\\\"\",kind=\"twilio\",outcome=\"delivered\"} 0",
            "# TYPE notifyd_delivery_duration_seconds histogram",
            "# TYPE notifyd_queue_depth gauge",
            "notifyd_queue_depth{channel=\"sms \\\"eu\\\"\",state=\"queued\"} 4",
            "notifyd_queue_oldest_due_seconds{channel=\"sms \\\"eu\\\"\"} 1.5",
            "notifyd_breaker_state{channel=\"sms \\\"eu\\\"\"} 2",
            "notifyd_queue_round_trips_total 7",
            "notifyd_rate_limit_waits_total{channel=\"sms \\\"eu\\\"\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
