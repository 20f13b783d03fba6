//! A circuit breaker: closed → open when the provider keeps failing, half-open after a cool
//! down to let a few probes through, closed again when they succeed.
//!
//! Only retryable failures count: a rejected recipient is not the provider's fault. While open
//! the dispatcher sends nothing to the provider and its notifications wait (or fail over)
//! without spending attempts; the breaker says when it will probe next.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::clock;
use crate::config::BreakerConfig;

/// Buckets the sliding window is kept in.
const BUCKETS: u32 = 10;

/// What a finished call says about the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// A retryable failure: 5xx, timeout, connection error, malformed answer.
    Failure,
    /// Says nothing about the provider: a rejected recipient, a rate-limit answer.
    Neutral,
}

/// Whether calls may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: as many calls as the caller wants.
    Closed,
    /// Half-open: at most this many probe calls (at least 1).
    Probe(u32),
    /// Open (or all probes in flight): nothing until then.
    Open { until: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    ok: u32,
    failed: u32,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    window: VecDeque<Bucket>,
    consecutive: u32,
    /// Re-openings since it was last closed: each doubles the open time.
    reopenings: u32,
    opened_total: u64,
}

/// What `GET /v1/channels` shows of a breaker.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BreakerView {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Failed share of the calls in the window.
    pub failure_ratio: f64,
    pub calls_in_window: u32,
    /// While open: how long until the next probe.
    pub next_probe_in_ms: Option<u64>,
    /// How many times it opened since the daemon started.
    pub opened_total: u64,
}

/// One channel's breaker.
#[derive(Debug)]
pub struct Breaker {
    channel: String,
    critical: bool,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker for `channel`.
    pub fn new(channel: &str, critical: bool, config: BreakerConfig) -> Self {
        Self {
            channel: channel.to_owned(),
            critical,
            config,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                window: VecDeque::new(),
                consecutive: 0,
                reopenings: 0,
                opened_total: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks to start up to `want` calls. A `Probe(n)` reserves `n` probe slots: report each
    /// started probe with [`Breaker::record`] and give back unused ones with
    /// [`Breaker::unused_probes`] (the [`crate::policy::Gate`] does both through values that
    /// report themselves on drop).
    pub fn admit(&self, want: u32) -> Admission {
        if !self.config.enabled {
            return Admission::Closed;
        }
        let now = clock::now();
        let mut inner = self.lock();
        if let Phase::Open { until } = inner.phase {
            if now < until {
                return Admission::Open { until };
            }
            inner.phase = Phase::HalfOpen {
                in_flight: 0,
                succeeded: 0,
            };
            tracing::info!(channel = %self.channel, probes = self.config.probes,
                "Circuit breaker half-open: letting probes through.");
        }
        match &mut inner.phase {
            Phase::Closed => Admission::Closed,
            Phase::HalfOpen { in_flight, .. } => {
                let free = self.config.probes.saturating_sub(*in_flight);
                if free == 0 {
                    // Every probe is out: look again shortly.
                    return Admission::Open {
                        until: now + Duration::from_millis(50),
                    };
                }
                let n = free.min(want.max(1));
                *in_flight += n;
                Admission::Probe(n)
            }
            Phase::Open { until } => Admission::Open { until: *until },
        }
    }

    /// Returns probe slots reserved by [`Breaker::admit`] but not used.
    pub fn unused_probes(&self, n: u32) {
        if let Phase::HalfOpen { in_flight, .. } = &mut self.lock().phase {
            *in_flight = in_flight.saturating_sub(n);
        }
    }

    /// Records a finished call. `probe` says whether it was admitted as a probe; a call started
    /// in another phase than the current one is ignored (it says nothing about now).
    ///
    /// For a failed probe, returns when the breaker will probe next (the breaker is open again):
    /// the probed notification waits for that like every deferred one, so an outage never
    /// spends its attempts one probe at a time. `None` for every other call.
    pub fn record(&self, verdict: Verdict, probe: bool) -> Option<Instant> {
        if !self.config.enabled {
            return None;
        }
        let now = clock::now();
        let mut inner = self.lock();
        self.record_locked(&mut inner, verdict, probe, now);
        match inner.phase {
            Phase::Open { until } if probe && verdict == Verdict::Failure => Some(until),
            _ => None,
        }
    }

    fn record_locked(&self, inner: &mut Inner, verdict: Verdict, probe: bool, now: Instant) {
        match (inner.phase, probe) {
            (Phase::Closed, false) => self.record_closed(inner, verdict, now),
            (
                Phase::HalfOpen {
                    in_flight,
                    succeeded,
                },
                true,
            ) => {
                let in_flight = in_flight.saturating_sub(1);
                match verdict {
                    Verdict::Failure => {
                        inner.reopenings += 1;
                        self.open(inner, now, "a probe failed");
                    }
                    Verdict::Success if succeeded + 1 >= self.config.probes => {
                        inner.phase = Phase::Closed;
                        inner.window.clear();
                        inner.consecutive = 0;
                        inner.reopenings = 0;
                        tracing::info!(channel = %self.channel, "Circuit breaker closed: the provider recovered.");
                    }
                    Verdict::Success => {
                        inner.phase = Phase::HalfOpen {
                            in_flight,
                            succeeded: succeeded + 1,
                        }
                    }
                    Verdict::Neutral => {
                        inner.phase = Phase::HalfOpen {
                            in_flight,
                            succeeded,
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn record_closed(&self, inner: &mut Inner, verdict: Verdict, now: Instant) {
        let (ok, failed) = match verdict {
            Verdict::Success => (1, 0),
            Verdict::Failure => (0, 1),
            Verdict::Neutral => return,
        };
        inner.consecutive = if failed == 1 {
            inner.consecutive + 1
        } else {
            0
        };
        let width = self.config.window / BUCKETS;
        match inner.window.back_mut() {
            Some(b) if now < b.start + width => {
                b.ok += ok;
                b.failed += failed;
            }
            _ => inner.window.push_back(Bucket {
                start: now,
                ok,
                failed,
            }),
        }
        self.evict(inner, now);
        let (calls, failures) = totals(inner);
        let ratio_trips = calls >= self.config.min_calls
            && f64::from(failures) >= self.config.failure_ratio * f64::from(calls);
        let streak_trips = self.config.consecutive_failures > 0
            && inner.consecutive >= self.config.consecutive_failures;
        if ratio_trips || streak_trips {
            let why = if ratio_trips {
                format!("{failures} of the last {calls} calls failed")
            } else {
                format!("{} failures in a row", inner.consecutive)
            };
            self.open(inner, now, &why);
        }
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        while inner
            .window
            .front()
            .is_some_and(|b| b.start + self.config.window <= now)
        {
            inner.window.pop_front();
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant, why: &str) {
        let factor = 1u32 << inner.reopenings.min(16);
        let open_for = self
            .config
            .open_for
            .saturating_mul(factor)
            .min(self.config.max_open_for);
        inner.phase = Phase::Open {
            until: now + open_for,
        };
        inner.opened_total += 1;
        if self.critical {
            tracing::error!(channel = %self.channel, reason = why, open_for = ?open_for, critical = true,
                "Circuit breaker opened: the provider is failing; notifications wait.");
        } else {
            tracing::warn!(channel = %self.channel, reason = why, open_for = ?open_for,
                "Circuit breaker opened: the provider is failing; notifications wait.");
        }
    }

    /// Whether calls flow freely now: a row claimed while the breaker was closed is sent only
    /// if it still is (open or half-open, only admitted probes go).
    pub fn is_closed(&self) -> bool {
        matches!(self.lock().phase, Phase::Closed)
    }

    /// The breaker as an operator sees it.
    pub fn view(&self) -> BreakerView {
        let now = clock::now();
        let mut inner = self.lock();
        self.evict(&mut inner, now);
        let (calls, failures) = totals(&inner);
        let (state, next) = match inner.phase {
            Phase::Closed => ("closed", None),
            Phase::Open { until } if until > now => ("open", Some(until - now)),
            Phase::Open { .. } | Phase::HalfOpen { .. } => ("half_open", None),
        };
        BreakerView {
            state,
            failure_ratio: if calls == 0 {
                0.0
            } else {
                f64::from(failures) / f64::from(calls)
            },
            calls_in_window: calls,
            next_probe_in_ms: next.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            opened_total: inner.opened_total,
        }
    }
}

fn totals(inner: &Inner) -> (u32, u32) {
    inner
        .window
        .iter()
        .fold((0, 0), |(c, f), b| (c + b.ok + b.failed, f + b.failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            failure_ratio: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            consecutive_failures: 0,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(100),
            probes: 1,
        }
    }

    fn calls(b: &Breaker, verdicts: &[Verdict]) {
        for v in verdicts {
            assert_eq!(b.record(*v, false), None);
        }
    }

    use Verdict::*;

    #[tokio::test(start_paused = true)]
    async fn stays_closed_below_the_minimum_number_of_calls() {
        let b = Breaker::new("c", false, config());
        calls(&b, &[Failure, Failure, Failure]);
        assert_eq!(b.admit(5), Admission::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_when_the_failure_ratio_is_reached() {
        let b = Breaker::new("c", false, config());
        calls(&b, &[Success, Failure, Success, Failure]);
        assert!(matches!(b.admit(5), Admission::Open { .. }));
        assert_eq!(b.view().state, "open");
        assert_eq!(b.view().next_probe_in_ms, Some(30_000));
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_outcomes_do_not_count() {
        let b = Breaker::new("c", false, config());
        calls(
            &b,
            &[
                Neutral, Neutral, Neutral, Failure, Success, Success, Success,
            ],
        );
        assert_eq!(b.admit(5), Admission::Closed);
        assert_eq!(b.view().calls_in_window, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_slide_out_of_the_window() {
        let b = Breaker::new("c", false, config());
        calls(&b, &[Failure, Failure, Failure]);
        tokio::time::advance(Duration::from_secs(11)).await;
        calls(&b, &[Failure, Success, Success, Success]);
        assert_eq!(b.admit(5), Admission::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_when_configured() {
        let b = Breaker::new(
            "c",
            false,
            BreakerConfig {
                consecutive_failures: 3,
                min_calls: 100,
                ..config()
            },
        );
        calls(&b, &[Failure, Failure]);
        assert_eq!(b.admit(1), Admission::Closed);
        calls(&b, &[Failure]);
        assert!(matches!(b.admit(1), Admission::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn half_opens_after_cool_down_and_lets_probes_through() {
        let b = Breaker::new(
            "c",
            false,
            BreakerConfig {
                probes: 2,
                ..config()
            },
        );
        calls(&b, &[Failure; 4]);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(matches!(b.admit(5), Admission::Open { .. }));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(5), Admission::Probe(2));
        assert!(
            matches!(b.admit(5), Admission::Open { .. }),
            "no probe slot left"
        );
        assert_eq!(b.view().state, "half_open");
    }

    #[tokio::test(start_paused = true)]
    async fn successful_probes_close_it() {
        let b = Breaker::new(
            "c",
            false,
            BreakerConfig {
                probes: 2,
                ..config()
            },
        );
        calls(&b, &[Failure; 4]);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(2), Admission::Probe(2));
        b.record(Success, true);
        assert_eq!(b.view().state, "half_open");
        b.record(Success, true);
        assert_eq!(b.admit(5), Admission::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() {
        let b = Breaker::new("c", false, config());
        calls(&b, &[Failure; 4]);
        for expected in [60_000, 100_000, 100_000] {
            tokio::time::advance(Duration::from_secs(100)).await;
            assert_eq!(b.admit(1), Admission::Probe(1));
            let next = b.record(Failure, true);
            assert_eq!(b.view().next_probe_in_ms, Some(expected));
            assert_eq!(next, Some(clock::now() + Duration::from_millis(expected)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_failing_after_another_reopened_it_also_learns_the_next_probe_time() {
        let b = Breaker::new(
            "c",
            false,
            BreakerConfig {
                probes: 2,
                ..config()
            },
        );
        calls(&b, &[Failure; 4]);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(2), Admission::Probe(2));
        let first = b.record(Failure, true);
        assert_eq!(first, Some(clock::now() + Duration::from_secs(60)));
        assert_eq!(
            b.record(Failure, true),
            first,
            "same wait as the first probe"
        );
        assert_eq!(
            b.view().opened_total,
            2,
            "the late probe did not re-open it again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_failed_probe_learns_a_next_probe_time() {
        let b = Breaker::new(
            "c",
            false,
            BreakerConfig {
                probes: 2,
                ..config()
            },
        );
        calls(&b, &[Failure; 4]);
        // A late failure from before the trip: ignored, and not a probe.
        assert_eq!(b.record(Failure, false), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(2), Admission::Probe(2));
        assert_eq!(b.record(Neutral, true), None);
        assert_eq!(b.record(Success, true), None);
    }

    #[tokio::test(start_paused = true)]
    async fn unused_probe_slots_are_given_back() {
        let b = Breaker::new("c", false, config());
        calls(&b, &[Failure; 4]);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(1), Admission::Probe(1));
        b.unused_probes(1);
        assert_eq!(b.admit(1), Admission::Probe(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_result_from_before_the_trip_is_ignored() {
        let b = Breaker::new("c", false, config());
        calls(&b, &[Failure; 4]);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(1), Admission::Probe(1));
        b.record(Success, false); // started while closed, finished now
        assert_eq!(b.view().state, "half_open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_breaker_never_opens() {
        let b = Breaker::new(
            "c",
            false,
            BreakerConfig {
                enabled: false,
                ..config()
            },
        );
        calls(&b, &[Failure; 20]);
        assert_eq!(b.admit(1), Admission::Closed);
    }
}
