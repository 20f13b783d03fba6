use serde::Deserialize;

use crate::Secret;

/// `kind = "vonage"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    pub api_key: String,
    pub api_secret: Secret,
    /// The sender: a number (E.164) or an alphanumeric sender id where allowed.
    pub from: String,
    /// Where Vonage posts delivery receipts.
    pub callback: Option<String>,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Longest body accepted, in SMS segments.
    #[serde(default = "default_max_segments")]
    pub max_segments: u32,
}

fn default_base_url() -> String {
    "https://rest.nexmo.com".into()
}

fn default_max_segments() -> u32 {
    10
}
