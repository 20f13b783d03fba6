use serde::Deserialize;

use crate::Secret;

/// `kind = "fcm"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The Google service-account JSON (give it as `service_account_file`).
    pub service_account: Secret,
    /// Defaults to the service account's project.
    pub project_id: Option<String>,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Defaults to the service account's `token_uri`.
    pub token_url: Option<String>,
}

fn default_base_url() -> String {
    "https://fcm.googleapis.com".into()
}
