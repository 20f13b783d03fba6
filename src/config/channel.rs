//! One `[channels.<name>]` table: the provider part (selected by `kind`, owned by
//! `notifyd-channels`) and the daemon's policy part (criticality, timeouts, retry, concurrency),
//! side by side in the same table.

use std::time::Duration;

use notifyd_channels::{ProviderConfig, Timeouts};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::{duration, secret_files};

/// A configured channel.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub provider: ProviderConfig,
    pub policy: ChannelPolicy,
}

/// How an outage of a channel is treated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
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
}

impl Default for ChannelPolicy {
    fn default() -> Self {
        Self {
            criticality: Criticality::Optional,
            timeouts: TimeoutsConfig::default(),
            retry: RetryPolicy::default(),
            concurrency: 32,
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
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

/// The keys of a channel table that belong to the policy; the rest belong to the provider.
const POLICY_KEYS: &[&str] = &["criticality", "timeouts", "retry", "concurrency"];

impl ChannelPolicy {
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
        out
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
            .map_err(|e| D::Error::custom(format!("`{}`: {}", e.path(), e.inner())))?;
        if !table.contains_key("kind") {
            return Err(D::Error::custom("missing `kind` (e.g. kind = \"webhook\")"));
        }
        let provider: ProviderConfig = serde_path_to_error::deserialize(Value::Object(table))
            .map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    D::Error::custom(e.inner().to_string())
                } else {
                    D::Error::custom(format!("`{path}`: {}", e.inner()))
                }
            })?;
        Ok(Self { provider, policy })
    }
}
