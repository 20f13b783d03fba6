//! E-mail over SMTP with lettre: async, pooled, rustls. `body` and `html` become
//! multipart/alternative; the `Message-ID` is derived from the notification id, so a resend
//! after a crash is recognisable as the same mail.

mod client;
mod config;

pub use client::Smtp;
pub use config::{SmtpConfig, TlsMode};

#[cfg(any(test, feature = "test-server"))]
pub mod test_server;
#[cfg(test)]
mod tests;
