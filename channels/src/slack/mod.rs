//! Slack channels: incoming webhooks (`slack_webhook`) and the Web API's `chat.postMessage` (`slack`).

#[cfg(feature = "slack")]
pub mod web;
#[cfg(feature = "slack")]
pub mod webhook;
