//! Firebase Cloud Messaging HTTP v1: an OAuth 2.0 access token from the service account's
//! JWT-bearer grant (cached, refreshed before it expires, one refresh for concurrent sends),
//! then `POST {base_url}/v1/projects/{project_id}/messages:send`.
//!
//! `Message.data` maps to the FCM message: `data.data` (string → string) becomes FCM `data`;
//! `data.android`, `data.apns`, `data.webpush` and `data.fcm_options` are passed through as the
//! platform overrides; `subject` and `body` become `notification.title` and `.body`.

mod client;
mod config;

pub use client::Fcm;
pub use config::FcmConfig;

#[cfg(test)]
mod tests;
