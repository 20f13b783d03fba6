use serde::Deserialize;

use crate::Secret;

/// `kind = "twilio"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// `AC` + 32 hex digits.
    pub account_sid: String,
    /// The account's auth token (or give `api_key_sid` + `api_key_secret`).
    pub auth_token: Option<Secret>,
    pub api_key_sid: Option<String>,
    pub api_key_secret: Option<Secret>,
    /// The sending number (E.164), or give `messaging_service_sid`.
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    /// Where Twilio posts status changes (point it at notifyd's `/v1/inbound/<channel>`).
    pub status_callback: Option<String>,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Longest body accepted, in SMS segments.
    #[serde(default = "default_max_segments")]
    pub max_segments: u32,
}

fn default_base_url() -> String {
    "https://api.twilio.com".into()
}

fn default_max_segments() -> u32 {
    10
}
