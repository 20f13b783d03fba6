//! Vonage SMS API: `POST {base_url}/sms/json`, form-encoded, credentials in the body. It answers
//! HTTP 200 even when a message fails: each `messages[].status` decides ("0" is success).

mod client;
mod config;

pub use client::Vonage;
pub use config::VonageConfig;

#[cfg(test)]
mod tests;
