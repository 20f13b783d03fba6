//! Web Push (RFC 8030) with aes128gcm payload encryption (RFC 8291) and VAPID (RFC 8292).
//!
//! `to` is the browser's subscription JSON: `{"endpoint", "keys": {"p256dh", "auth"}}`. The
//! encrypted payload is `{"title": subject, "body": body, "data": data, "id": notification id}`.
//! `data.topic` (≤ 32 URL-safe characters) becomes the `Topic` header, replacing an undelivered
//! push with the same topic.

mod client;
mod config;

pub use client::Webpush;
pub use config::{Urgency, WebpushConfig};

#[cfg(test)]
mod tests;
