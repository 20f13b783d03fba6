//! Push channels: FCM HTTP v1, APNs over HTTP/2, Web Push (RFC 8030/8291/8292).

#[cfg(feature = "apns")]
pub mod apns;
#[cfg(feature = "fcm")]
pub mod fcm;
#[cfg(feature = "webpush")]
pub mod webpush;
