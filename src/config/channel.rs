//! One `[channels.<name>]` table: the provider part (selected by `kind`, owned by
//! `notifyd-channels`) and the daemon's policy part (criticality, timeouts, retry, concurrency,
//! breaker, rate limit, failover), side by side in the same table.

use std::time::Duration;

use notifyd_channels::{ProviderConfig, Timeouts};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::{duration, secret_files};
use crate::model::ChannelName;
use crate::rules::quiet_hours::ChannelQuiet;
use crate::window::{Window, WindowSpec, Zone};

/// A configured channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub provider: ProviderConfig,
    pub policy: ChannelPolicy,
}

/// How an outage of a channel is treated.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    /// Its notifications matter: a dead one is logged at error level and counted apart.
    Critical,
    /// An outage degrades quietly.
    #[default]
    Optional,
}

/// The daemon's policy around a channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelPolicy {
    pub criticality: Criticality,
    pub timeouts: TimeoutsConfig,
    pub retry: RetryPolicy,
    /// Sends in flight at once (the bulkhead): a hanging provider holds only these slots.
    pub concurrency: usize,
    pub breaker: BreakerConfig,
    /// Unlimited when absent.
    pub rate_limit: Option<RateLimitConfig>,
    /// Channels of the same kind of recipient to move a notification to when this one's breaker
    /// is open or its retries ran out on retryable errors (never on a rejection).
    pub failover: Vec<ChannelName>,
    /// How provider delivery receipts sent to `POST /v1/inbound/<name>` are verified; receipts
    /// are refused when absent.
    pub receipts: Option<ReceiptsConfig>,
    /// Local hours this channel sends nothing, and the time zone its recipients' hours are read
    /// in when they did not give theirs.
    pub quiet_hours: Option<QuietHoursConfig>,
    /// E-mail (`smtp`) only: `List-Unsubscribe` headers (RFC 8058) with a signed one-click link
    /// that opts the recipient out of this channel. Unset: on when `[links]` is configured;
    /// `true` requires `[links]`; `false` for purely transactional mail.
    pub unsubscribe: Option<bool>,
    /// The dedup window of a notification that carries a `dedup_key` but no `dedup_window`
    /// ([`crate::rules::dedup`]); without it such a notification must give its own.
    #[serde(deserialize_with = "duration::option::deserialize")]
    pub dedup_window: Option<Duration>,
    /// Collect notifications that carry a `digest_key` for this long, then send them as one
    /// digest ([`crate::rules::digest`]); the channel collects nothing when absent.
    #[serde(deserialize_with = "duration::option::deserialize")]
    pub digest_window: Option<Duration>,
    /// A digest holding this many items is sent at once, before its window ends.
    pub digest_max: u32,
    /// The template that renders a digest (it gets `items`); a plain list when absent.
    pub digest_template: Option<String>,
}

/// `quiet_hours = { start = "22:00", end = "07:00", time_zone = "Europe/Paris",
/// high_priority_passes = true }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursConfig {
    /// Local time the quiet hours begin (`HH:MM`); with `end`, or neither (a zone only).
    pub start: Option<String>,
    /// Local time they end (exclusive); earlier than `start` means the next day.
    pub end: Option<String>,
    /// IANA zone for recipients who did not give theirs.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Whether `high` priority notifications pass them.
    #[serde(default = "yes")]
    pub high_priority_passes: bool,
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

impl QuietHoursConfig {
    /// The checked rule, or each problem naming its key (under `quiet_hours.`).
    pub fn checked(&self) -> Result<ChannelQuiet, Vec<String>> {
        let mut problems = Vec::new();
        let zone = Zone::named(&self.time_zone);
        if zone.is_none() {
            problems.push(format!(
                "quiet_hours.time_zone: {:?} is not an IANA time zone (such as Europe/Paris)",
                self.time_zone
            ));
        }
        let window = match (&self.start, &self.end) {
            (Some(start), Some(end)) => Window::from_spec(&WindowSpec {
                start: start.clone(),
                end: end.clone(),
            })
            .map(Some)
            .unwrap_or_else(|e| {
                problems.push(format!("quiet_hours.{}: {}", e.part, e.message));
                None
            }),
            (None, None) => None,
            _ => {
                problems.push("quiet_hours: give both start and end, or neither".into());
                None
            }
        };
        match zone {
            Some(zone) if problems.is_empty() => Ok(ChannelQuiet {
                window,
                zone,
                high_priority_passes: self.high_priority_passes,
            }),
            _ => Err(problems),
        }
    }
}

/// `receipts = { verify = "twilio", ... }` or `{ verify = "hmac", ... }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "verify", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReceiptsConfig {
    /// Twilio status callbacks: `X-Twilio-Signature`, HMAC-SHA1 with the account's auth token
    /// over the public URL and the sorted form parameters.
    Twilio {
        auth_token: notifyd_channels::Secret,
        /// The URL exactly as Twilio calls it (behind a proxy it differs from what we see).
        url: String,
    },
    /// JSON receipts signed like notifyd's own webhooks: `Webhook-Timestamp` and
    /// `Webhook-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
    Hmac {
        secret: notifyd_channels::Secret,
        /// Timestamps further than this from our clock are refused (replays).
        #[serde(default = "five_minutes", with = "duration")]
        tolerance: Duration,
    },
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        Self {
            criticality: Criticality::Optional,
            timeouts: TimeoutsConfig::default(),
            retry: RetryPolicy::default(),
            concurrency: 32,
            breaker: BreakerConfig::default(),
            rate_limit: None,
            failover: Vec::new(),
            receipts: None,
            quiet_hours: None,
            unsubscribe: None,
            dedup_window: None,
            digest_window: None,
            digest_max: 100,
            digest_template: None,
        }
    }
}

/// `timeouts = { connect, read, total }`; each defaults to the channel kind's default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    #[serde(deserialize_with = "duration::option::deserialize")]
    pub connect: Option<Duration>,
    #[serde(deserialize_with = "duration::option::deserialize")]
    pub read: Option<Duration>,
    #[serde(deserialize_with = "duration::option::deserialize")]
    pub total: Option<Duration>,
}

/// `retry = { max_attempts, base, max }`: exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts before a notification goes to the dead letters (rate-limited answers don't count).
    pub max_attempts: u32,
    /// The first retry waits up to this long.
    #[serde(with = "duration")]
    pub base: Duration,
    /// No wait is longer, whatever the attempt or the provider's `Retry-After`.
    #[serde(with = "duration")]
    pub max: Duration,
    /// A notification older than this is not retried again: it goes to the dead letters.
    #[serde(deserialize_with = "duration::option::deserialize")]
    pub max_age: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
            max_age: None,
        }
    }
}

/// `breaker = { ... }`: the circuit breaker around the channel's provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub enabled: bool,
    /// Opens when at least this share of the calls in the window failed...
    pub failure_ratio: f64,
    /// ... and the window holds at least this many calls.
    pub min_calls: u32,
    /// The sliding window the ratio is computed over.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Also opens after this many failures in a row (0: off).
    pub consecutive_failures: u32,
    /// How long it stays open before letting probes through.
    #[serde(with = "duration")]
    pub open_for: Duration,
    /// Each failed probe doubles the open time, up to this.
    #[serde(with = "duration")]
    pub max_open_for: Duration,
    /// Calls let through when half-open; that many successes close it.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_ratio: 0.5,
            min_calls: 10,
            window: Duration::from_secs(60),
            consecutive_failures: 0,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            probes: 1,
        }
    }
}

/// A rate: `per_second` or `per_minute`, with a `burst`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_second: Option<f64>,
    pub per_minute: Option<f64>,
    /// Calls allowed back to back before the rate applies.
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

impl Rate {
    /// Calls per second.
    pub fn per_second(&self) -> f64 {
        self.per_second
            .unwrap_or_else(|| self.per_minute.unwrap_or(0.0) / 60.0)
    }

    fn problems(&self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        match (self.per_second, self.per_minute) {
            (Some(_), Some(_)) | (None, None) => out.push(format!(
                "{key}: give exactly one of per_second or per_minute"
            )),
            _ => {}
        }
        if !(self.per_second() > 0.0 && self.per_second().is_finite()) {
            out.push(format!("{key}: the rate must be more than 0"));
        }
        if self.burst == 0 {
            out.push(format!("{key}.burst: must be at least 1"));
        }
        out
    }
}

/// `rate_limit = { per_second | per_minute, burst, per_recipient? }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(flatten)]
    pub channel: Rate,
    /// A separate limit for each recipient (e.g. one SMS a minute to the same number).
    pub per_recipient: Option<Rate>,
}

/// The keys of a channel table that belong to the policy; the rest belong to the provider.
const POLICY_KEYS: &[&str] = &[
    "criticality",
    "timeouts",
    "retry",
    "concurrency",
    "breaker",
    "rate_limit",
    "failover",
    "receipts",
    "quiet_hours",
    "unsubscribe",
    "dedup_window",
    "digest_window",
    "digest_max",
    "digest_template",
];

impl ChannelPolicy {
    /// The channel's digest settings, when it collects digests (`digest_window` is set).
    pub fn digest(&self) -> Option<crate::rules::digest::DigestPolicy> {
        Some(crate::rules::digest::DigestPolicy {
            window: self.digest_window?,
            max: self.digest_max,
            template: self.digest_template.clone(),
        })
    }

    /// Value problems, each prefixed with its key.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.concurrency == 0 {
            out.push("concurrency: must be at least 1".into());
        }
        if self.retry.max_attempts == 0 {
            out.push("retry.max_attempts: must be at least 1".into());
        }
        if self.retry.base.is_zero() {
            out.push("retry.base: must be more than 0".into());
        }
        if self.retry.max_age.is_some_and(|d| d.is_zero()) {
            out.push("retry.max_age: must be more than 0".into());
        }
        let b = &self.breaker;
        if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
            out.push("breaker.failure_ratio: must be more than 0 and at most 1".into());
        }
        if b.min_calls == 0 {
            out.push("breaker.min_calls: must be at least 1".into());
        }
        if b.probes == 0 {
            out.push("breaker.probes: must be at least 1".into());
        }
        if b.window.is_zero() || b.open_for.is_zero() {
            out.push("breaker: window and open_for must be more than 0".into());
        }
        if b.max_open_for < b.open_for {
            out.push("breaker.max_open_for: must not be less than open_for".into());
        }
        if let Some(Err(e)) = self.dedup_window.map(crate::rules::dedup::check_window) {
            out.push(format!("dedup_window: {e}"));
        }
        if let Some(digest) = self.digest() {
            out.extend(crate::rules::digest::problems(&digest));
        }
        if let Some(r) = &self.rate_limit {
            out.extend(r.channel.problems("rate_limit"));
            if let Some(p) = &r.per_recipient {
                out.extend(p.problems("rate_limit.per_recipient"));
            }
        }
        if self.retry.base > self.retry.max {
            out.push("retry.base: must not be more than retry.max".into());
        }
        for (key, value) in [
            ("connect", self.timeouts.connect),
            ("read", self.timeouts.read),
            ("total", self.timeouts.total),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                out.push(format!("timeouts.{key}: must be more than 0"));
            }
        }
        if let Some(Err(problems)) = self.quiet_hours.as_ref().map(QuietHoursConfig::checked) {
            out.extend(problems);
        }
        out
    }

    /// The channel's quiet-hours rule, when configured and valid ([`Self::problems`] reports
    /// an invalid one before the daemon starts).
    pub fn quiet(&self) -> Option<ChannelQuiet> {
        self.quiet_hours.as_ref().and_then(|q| q.checked().ok())
    }

    /// The effective timeouts: what the config says, else the kind's defaults.
    pub fn timeouts(&self, kind_default: Timeouts) -> Timeouts {
        Timeouts {
            connect: self.timeouts.connect.unwrap_or(kind_default.connect),
            read: self.timeouts.read.unwrap_or(kind_default.read),
            total: self.timeouts.total.unwrap_or(kind_default.total),
        }
    }
}

impl<'de> Deserialize<'de> for ChannelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = Map::<String, Value>::deserialize(d)?;
        secret_files::resolve(&mut table).map_err(D::Error::custom)?;
        let mut policy = Map::new();
        for key in POLICY_KEYS {
            if let Some(v) = table.remove(*key) {
                policy.insert((*key).to_owned(), v);
            }
        }
        let policy: ChannelPolicy = serde_path_to_error::deserialize(Value::Object(policy))
            .map_err(|e| {
                D::Error::custom(format!(
                    "`{}`: {}",
                    e.path(),
                    super::without_found_value(&e.inner().to_string())
                ))
            })?;
        if !table.contains_key("kind") {
            return Err(D::Error::custom("missing `kind` (e.g. kind = \"webhook\")"));
        }
        let provider: ProviderConfig = serde_path_to_error::deserialize(Value::Object(table))
            .map_err(|e| {
                let (path, inner) = (
                    e.path().to_string(),
                    super::without_found_value(&e.inner().to_string()),
                );
                if path == "." {
                    D::Error::custom(inner)
                } else {
                    D::Error::custom(format!("`{path}`: {inner}"))
                }
            })?;
        Ok(Self { provider, policy })
    }
}
