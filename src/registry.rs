//! The configured channels, built and ready: each channel with its policy, its [`Gate`] (breaker,
//! rate limits, hold, lease budget, bulkhead), the wake-up its dispatcher loop waits on, its
//! counters and its health.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notifyd_channels::{BuildContext, Channel, Timeouts};
use serde::Serialize;
use tokio::sync::Notify;

use crate::channel_stats::{AttemptClass, ChannelStats};
use crate::clock::now_ms;
use crate::config::{ChannelPolicy, Config, Criticality};
use crate::model::ChannelName;
use crate::outbox::limits::ClusterLimits;
use crate::per_minute::PerMinute;
use crate::policy::Gate;
use crate::rules::quiet_hours::ChannelQuiet;
use crate::signed_link::LinkKey;

/// One channel at run time.
pub struct ChannelRuntime {
    pub name: ChannelName,
    pub kind: &'static str,
    pub channel: Arc<dyn Channel>,
    pub policy: ChannelPolicy,
    pub timeouts: Timeouts,
    /// Whether the provider may be called now: breaker, rate limits, hold, leases, bulkhead.
    pub gate: Arc<Gate>,
    /// Woken when a notification for this channel was just enqueued here.
    pub wake: Notify,
    /// Counters for `/metrics`.
    pub stats: ChannelStats,
    /// The last hour of attempts per minute, for the console.
    pub per_minute: PerMinute,
    /// Its quiet hours and default zone (`quiet_hours`), checked.
    pub quiet: Option<ChannelQuiet>,
    /// Where its e-mails' one-click unsubscribe links point, when they carry one.
    pub unsubscribe: Option<UnsubscribeLinks>,
    health: Mutex<Health>,
}

/// What an e-mail channel needs to put a signed unsubscribe link in each message.
#[derive(Debug, Clone)]
pub struct UnsubscribeLinks {
    /// `[links] base_url`, without a trailing slash.
    pub base_url: String,
    pub key: LinkKey,
}

/// What an operator wants to know about a channel right now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// While in the future, the channel sends nothing: its credentials were refused, or the
    /// provider asked it to wait (`Retry-After` on a rate-limit answer). From the [`Gate`].
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
    pub class: AttemptClass,
    pub code: String,
    pub message: String,
    pub at_ms: i64,
}

pub(crate) use crate::per_minute::AttemptKind;

impl ChannelRuntime {
    /// A channel at run time: its gate fresh (breaker closed, limits full, not held).
    pub fn new(
        name: impl Into<ChannelName>,
        channel: Arc<dyn Channel>,
        policy: ChannelPolicy,
        timeouts: Timeouts,
    ) -> Self {
        Self::with_limits(name, channel, policy, timeouts, None)
    }

    /// [`ChannelRuntime::new`] with its rate limits and holds shared through `cluster` with the
    /// other daemons on the queue.
    pub fn with_limits(
        name: impl Into<ChannelName>,
        channel: Arc<dyn Channel>,
        policy: ChannelPolicy,
        timeouts: Timeouts,
        cluster: Option<Arc<dyn ClusterLimits>>,
    ) -> Self {
        let name = name.into();
        Self {
            kind: channel.kind(),
            gate: Gate::with_limits(&name, &policy, cluster),
            name,
            quiet: policy.quiet(),
            channel,
            policy,
            timeouts,
            wake: Notify::new(),
            stats: ChannelStats::default(),
            per_minute: PerMinute::default(),
            unsubscribe: None,
            health: Mutex::new(Health::default()),
        }
    }

    fn health_mut(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
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
        let hold = self.gate.held();
        Health {
            held_until_ms: hold.map(|h| h.until_ms),
            held_because: hold.map(|h| h.because.as_str()),
            ..self.health_mut().clone()
        }
    }

    /// Sends in flight now.
    pub fn in_flight(&self) -> usize {
        self.gate.in_flight()
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

impl UnsubscribeLinks {
    /// How long a link works (retention may end it sooner: the link names its notification).
    pub const LIFETIME_MS: i64 = 365 * 86_400_000;

    /// The one-click link (`POST /v1/unsubscribe/{token}`) for notification `id`.
    pub fn url_for(&self, id: &str, now_ms: i64) -> String {
        let token = crate::signed_link::sign(
            &self.key,
            &crate::signed_link::LinkClaims {
                purpose: crate::signed_link::Purpose::Unsubscribe,
                notification: id.to_owned(),
                expires_ms: now_ms + Self::LIFETIME_MS,
            },
        );
        format!("{}/v1/unsubscribe/{token}", self.base_url)
    }
}

/// The links an e-mail channel's messages carry: for `smtp` channels whose `unsubscribe` is not
/// `false`, when `[links]` has a base URL and a key (`unsubscribe = true` without them is a
/// config error).
fn unsubscribe_links(
    config: &Config,
    channel: &crate::config::ChannelConfig,
) -> Option<UnsubscribeLinks> {
    if channel.provider.kind() != "smtp" || channel.policy.unsubscribe == Some(false) {
        return None;
    }
    Some(UnsubscribeLinks {
        base_url: config.links.base_url.clone()?,
        key: config.links.key()?,
    })
}

/// All configured channels by name.
#[derive(Clone, Default)]
pub struct Registry {
    channels: BTreeMap<ChannelName, Arc<ChannelRuntime>>,
    /// `[links] secret`'s key: what checks the signed links that come back (unsubscribe).
    link_key: Option<LinkKey>,
}

impl Registry {
    /// Builds every channel (reads keys, sets up clients; no network I/O). Every failure is
    /// reported, each naming its channel and key.
    pub fn build(config: &Config) -> Result<Self, Vec<String>> {
        Self::build_sharing(config, None)
    }

    /// [`Registry::build`] for a queue whose store shares rate limits and holds between its
    /// daemons ([`crate::outbox::Outbox::cluster_limits`]; `None`: kept in this process).
    pub fn build_sharing(
        config: &Config,
        cluster: Option<Arc<dyn ClusterLimits>>,
    ) -> Result<Self, Vec<String>> {
        let mut channels = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, cfg) in &config.channels {
            let timeouts = cfg.policy.timeouts(cfg.provider.default_timeouts());
            let ctx = BuildContext {
                channel: name.to_string(),
                timeouts,
            };
            match cfg.provider.build(&ctx) {
                Ok(channel) => {
                    let mut rt = ChannelRuntime::with_limits(
                        name.clone(),
                        channel,
                        cfg.policy.clone(),
                        timeouts,
                        cluster.clone(),
                    );
                    rt.unsubscribe = unsubscribe_links(config, cfg);
                    channels.insert(name.clone(), Arc::new(rt));
                }
                Err(e) => problems.push(format!("channels.{name}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                channels,
                link_key: config.links.key(),
            })
        } else {
            Err(problems)
        }
    }

    /// A registry of channels built elsewhere (tests with a scripted channel).
    pub fn of(channels: impl IntoIterator<Item = ChannelRuntime>) -> Self {
        Self {
            channels: channels
                .into_iter()
                .map(|rt| (rt.name.clone(), Arc::new(rt)))
                .collect(),
            link_key: None,
        }
    }

    /// The key signed links are checked with, when `[links] secret` is configured.
    pub fn link_key(&self) -> Option<&LinkKey> {
        self.link_key.as_ref()
    }

    /// The channel of that name.
    pub fn get(&self, name: &ChannelName) -> Option<&Arc<ChannelRuntime>> {
        self.channels.get(name)
    }

    /// Every channel, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ChannelRuntime>> {
        self.channels.values()
    }

    /// The configured names.
    pub fn names(&self) -> Vec<ChannelName> {
        self.channels.keys().cloned().collect()
    }

    /// Wakes the dispatcher loop of a channel that was just given work.
    pub fn wake(&self, name: &ChannelName) {
        if let Some(rt) = self.channels.get(name) {
            rt.wake.notify_one();
        }
    }

    /// Wakes the dispatcher loop of a channel that was just given a row due at `run_at_ms`, if
    /// the queue's clock (`now_ms`) says it is due. A row scheduled later is left to the loop's
    /// poll, which claims it once due: a claim now would not find it, so waking the loop for it
    /// cost the queue an empty claim per accepted request.
    pub fn wake_if_due(&self, name: &ChannelName, run_at_ms: i64, now_ms: i64) {
        if run_at_ms <= now_ms {
            self.wake(name);
        }
    }

    /// [`Self::wake_if_due`] for the rows of one request, given as (channel, due time): each
    /// channel once, by its earliest row.
    pub fn wake_where_due(&self, mut rows: Vec<(ChannelName, i64)>, now_ms: i64) {
        rows.sort();
        rows.dedup_by(|later, first| later.0 == first.0);
        for (channel, run_at_ms) in &rows {
            self.wake_if_due(channel, *run_at_ms, now_ms);
        }
    }
}
