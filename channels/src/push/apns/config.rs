use serde::Deserialize;

use crate::Secret;

/// Which APNs host to use by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApnsEnvironment {
    /// `https://api.push.apple.com`
    #[default]
    Production,
    /// `https://api.sandbox.push.apple.com` (development builds of the app)
    Sandbox,
}

/// `kind = "apns"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The `.p8` signing key's PEM text (give it as `key_file`).
    pub key: Secret,
    /// The key's 10-character id.
    pub key_id: String,
    /// The 10-character Apple developer team id.
    pub team_id: String,
    /// The app's bundle id (`apns-topic`), unless a notification names another in `data.topic`.
    pub topic: String,
    #[serde(default)]
    pub environment: ApnsEnvironment,
    /// Overrides the environment's host; `http://` speaks HTTP/2 without TLS (tests only).
    pub base_url: Option<String>,
}
