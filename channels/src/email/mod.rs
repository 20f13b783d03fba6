//! E-mail channels.

#[cfg(feature = "smtp")]
pub mod smtp;
