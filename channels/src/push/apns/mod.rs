//! Apple Push Notification service: `POST {base_url}/3/device/{token}` over HTTP/2 with token
//! authentication (an ES256 JWT from the `.p8` key, reused for 50 minutes, refreshed before
//! Apple's hour).
//!
//! `Message.data`: `aps` is merged into the `aps` dictionary (sound, badge, category, …);
//! `collapse_id`, `expiration` (Unix seconds; without it APNs stores the push and keeps
//! trying, `0` = try once), `priority`, `push_type` and `topic` become the `apns-*` headers; every other key is a custom top-level payload key. Without a subject or a
//! body the push is a background push (`content-available`, priority 5).

mod client;
mod config;

pub use client::Apns;
pub use config::{ApnsConfig, ApnsEnvironment};

#[cfg(test)]
mod tests;
