//! Slack incoming webhooks: `POST <webhook url>` with a JSON payload; Slack answers `200 ok` or
//! a plain-text error code with an HTTP status. The URL is the credential.

mod client;
mod config;

pub use client::SlackWebhook;
pub use config::SlackWebhookConfig;

#[cfg(test)]
mod tests;
