use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::Secret;

/// How urgently the push service should deliver (RFC 8030 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    High,
}

impl Urgency {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VeryLow => "very-low",
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

/// `kind = "webpush"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebpushConfig {
    /// The VAPID P-256 private key, PKCS#8 PEM (give it as `vapid_private_key_file`).
    pub vapid_private_key: Secret,
    /// Who to contact about these pushes: a `mailto:` or `https:` URL.
    pub subject: String,
    /// How long the push service keeps an undelivered push.
    #[serde(default = "default_ttl", deserialize_with = "duration")]
    pub ttl: Duration,
    pub urgency: Option<Urgency>,
}

fn default_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}
