use serde::Deserialize;

use crate::Secret;

/// `kind = "slack_webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackWebhookConfig {
    /// The incoming webhook URL (`https://hooks.slack.com/services/T…/B…/…`): it is the
    /// credential, so give it as `url_file` or from the environment.
    pub url: Secret,
}
