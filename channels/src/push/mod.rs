//! Push channels: FCM HTTP v1, APNs over HTTP/2, Web Push.

#[cfg(feature = "apns")]
pub mod apns;
#[cfg(feature = "fcm")]
pub mod fcm;
#[cfg(any(feature = "fcm", feature = "apns"))]
mod token;
#[cfg(feature = "webpush")]
pub mod webpush;

/// Largest push payload FCM and APNs accept, in bytes.
pub const MAX_PAYLOAD: usize = 4096;
