//! The configured channels, built and ready: each channel with its policy, its bulkhead (a
//! semaphore of `concurrency` slots), its breaker and rate limiter, the wake-up its dispatcher
//! loop waits on, and its health.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notifyd_channels::{BuildContext, Channel, Timeouts};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::config::{ChannelPolicy, Config, Criticality};
use crate::metrics::ChannelStats;
use crate::outbox::now_ms;
use crate::per_minute::PerMinute;
use crate::policy::{Breaker, RateLimiter};

/// Rows a channel with this bulkhead may hold leased: the bulkhead sending and as many claimed
/// ahead.
pub fn max_leased(concurrency: usize) -> usize {
    2 * concurrency
}

/// One channel at run time.
pub struct ChannelRuntime {
    pub name: String,
    pub kind: &'static str,
    pub channel: Arc<dyn Channel>,
    pub policy: ChannelPolicy,
    pub timeouts: Timeouts,
    /// Free send slots: the bulkhead.
    pub slots: Arc<Semaphore>,
    /// Rows this process may hold leased: the bulkhead's worth in flight plus as many claimed
    /// ahead, waiting for a slot, so a freed slot never waits for a claim's round trip.
    pub leases: Arc<Semaphore>,
    /// Woken when a notification for this channel was just enqueued here.
    pub wake: Notify,
    pub breaker: Breaker,
    pub limiter: RateLimiter,
    /// Counters for `/metrics`.
    pub stats: ChannelStats,
    /// The last hour of attempts per minute, for the console.
    pub per_minute: PerMinute,
    health: Mutex<Health>,
}

/// What an operator wants to know about a channel right now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// While in the future, the channel sends nothing: its credentials were refused, or the
    /// provider asked it to wait (`Retry-After` on a rate-limit answer).
    #[serde(skip)]
    pub held_until: Option<Instant>,
    pub held_until_ms: Option<i64>,
    pub held_because: Option<&'static str>,
    pub last_error: Option<RecentError>,
    pub delivered: u64,
    pub failed: u64,
    pub retried: u64,
    /// Notifications that ended `dead` on this channel while it is `critical`.
    pub dead_critical: u64,
    /// Notifications of this channel, while it is `critical`, whose `expires_at` passed unsent.
    pub expired_critical: u64,
}

/// The most recent failed attempt of a channel.
#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    pub class: String,
    pub code: String,
    pub message: String,
    pub at_ms: i64,
}

/// How an attempt ended, for the health counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    Delivered,
    Failed,
    Retried,
}

impl ChannelRuntime {
    fn health_mut(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops this channel from sending for `hold`; a longer hold already in force is kept.
    pub fn hold(&self, hold: Duration, because: &'static str) {
        let until = Instant::now() + hold;
        let mut h = self.health_mut();
        if h.held_until.is_some_and(|t| t >= until) {
            return;
        }
        h.held_until = Some(until);
        h.held_until_ms = Some(now_ms() + i64::try_from(hold.as_millis()).unwrap_or(i64::MAX / 2));
        h.held_because = Some(because);
    }

    /// When the hold ends, if the channel is held now.
    pub fn held_until(&self) -> Option<Instant> {
        let mut h = self.health_mut();
        match h.held_until {
            Some(t) if t > Instant::now() => Some(t),
            Some(_) => {
                h.held_until = None;
                h.held_until_ms = None;
                h.held_because = None;
                None
            }
            None => None,
        }
    }

    /// Updates the health counters after an attempt.
    pub fn record(&self, outcome: AttemptKind, error: Option<RecentError>) {
        self.per_minute.add(outcome, now_ms());
        let mut h = self.health_mut();
        match outcome {
            AttemptKind::Delivered => h.delivered += 1,
            AttemptKind::Failed => h.failed += 1,
            AttemptKind::Retried => h.retried += 1,
        }
        if error.is_some() {
            h.last_error = error;
        }
    }

    /// Counts a critical notification that ended dead, for alerting.
    pub fn record_dead_critical(&self) {
        self.health_mut().dead_critical += 1;
    }

    /// Counts a critical notification that expired unsent, for alerting.
    pub fn record_expired_critical(&self) {
        self.health_mut().expired_critical += 1;
    }

    /// A snapshot of the channel's health.
    pub fn health(&self) -> Health {
        let _ = self.held_until();
        self.health_mut().clone()
    }

    /// Sends in flight now.
    pub fn in_flight(&self) -> usize {
        self.policy
            .concurrency
            .saturating_sub(self.slots.available_permits())
    }

    /// How long a claimed row stays leased: the send's own limit plus a margin.
    pub fn lease(&self, margin: Duration) -> Duration {
        self.timeouts.total + margin
    }

    /// Whether an outage of this channel must be loud.
    pub fn is_critical(&self) -> bool {
        self.policy.criticality == Criticality::Critical
    }
}

/// All configured channels by name.
#[derive(Clone, Default)]
pub struct Registry {
    channels: BTreeMap<String, Arc<ChannelRuntime>>,
}

impl Registry {
    /// Builds every channel (reads keys, sets up clients; no network I/O). Every failure is
    /// reported, each naming its channel and key.
    pub fn build(config: &Config) -> Result<Self, Vec<String>> {
        let mut channels = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, cfg) in &config.channels {
            let timeouts = cfg.policy.timeouts(cfg.provider.default_timeouts());
            let ctx = BuildContext {
                channel: name.clone(),
                timeouts,
            };
            match cfg.provider.build(&ctx) {
                Ok(channel) => {
                    let critical = cfg.policy.criticality == Criticality::Critical;
                    channels.insert(
                        name.clone(),
                        Arc::new(ChannelRuntime {
                            name: name.clone(),
                            kind: cfg.provider.kind(),
                            channel,
                            policy: cfg.policy.clone(),
                            timeouts,
                            slots: Arc::new(Semaphore::new(cfg.policy.concurrency)),
                            leases: Arc::new(Semaphore::new(max_leased(cfg.policy.concurrency))),
                            wake: Notify::new(),
                            breaker: Breaker::new(name, critical, cfg.policy.breaker.clone()),
                            limiter: RateLimiter::new(cfg.policy.rate_limit.as_ref()),
                            stats: ChannelStats::default(),
                            per_minute: PerMinute::default(),
                            health: Mutex::new(Health::default()),
                        }),
                    );
                }
                Err(e) => problems.push(format!("channels.{name}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(Self { channels })
        } else {
            Err(problems)
        }
    }

    /// The channel of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<ChannelRuntime>> {
        self.channels.get(name)
    }

    /// Every channel, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ChannelRuntime>> {
        self.channels.values()
    }

    /// The configured names.
    pub fn names(&self) -> Vec<String> {
        self.channels.keys().cloned().collect()
    }

    /// Wakes the dispatcher loop of a channel that was just given work.
    pub fn wake(&self, name: &str) {
        if let Some(rt) = self.channels.get(name) {
            rt.wake.notify_one();
        }
    }
}
