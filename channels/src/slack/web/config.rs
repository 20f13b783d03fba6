use serde::Deserialize;

use crate::Secret;

/// `kind = "slack"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// A bot (`xoxb-`) or user (`xoxp-`) token with `chat:write`.
    pub token: Secret,
    #[serde(default = "default_base_url")]
    pub base_url: String,
}

fn default_base_url() -> String {
    "https://slack.com".into()
}
