//! Slack Web API `chat.postMessage`: `POST {base_url}/api/chat.postMessage` with a bot token.
//! Slack answers HTTP 200 with `{"ok": false, "error": "..."}` for most failures.

mod client;
mod config;

pub use client::Slack;
pub use config::SlackConfig;

#[cfg(test)]
mod tests;
