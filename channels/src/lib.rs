//! notifyd's delivery side: the [`Channel`] strategy trait, the normalized [`Message`] and outcome
//! types ([`Receipt`], [`DeliveryError`]), the one [`FieldError`] of a refused input, and one module per provider.
//!
//! A channel delivers exactly once per call and classifies what happened; it never retries, waits
//! or queues by itself. Timeouts, retry, breakers and rate limits are the daemon's policies, wrapped
//! around any channel. Every provider module turns the provider's answer into our types at the
//! boundary, so nothing provider-specific leaks into the daemon.
//!
//! Adding a provider: a module implementing [`Channel`] plus its config struct, and one arm in
//! [`ProviderConfig`].

#![deny(unreachable_pub)]

mod channel;
mod field_error;
mod message;
mod outcome;
mod provider;
mod secret;

pub mod http;
pub mod redact;

#[cfg(feature = "smtp")]
pub mod email;
#[cfg(feature = "log")]
pub mod log;
#[cfg(any(feature = "fcm", feature = "apns", feature = "webpush"))]
pub mod push;
#[cfg(feature = "slack")]
pub mod slack;
#[cfg(any(feature = "twilio", feature = "vonage"))]
pub mod sms;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use channel::{Channel, SendContext};
pub use field_error::{FieldError, field_path};
pub use message::{Message, Receipt};
pub use outcome::DeliveryError;
pub use provider::{BuildContext, BuildError, ProviderConfig, Timeouts};
pub use secret::{Secret, same_secret};
