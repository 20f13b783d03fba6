use serde::Deserialize;

use crate::Secret;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain text (a local relay only).
    None,
    /// Plain connection upgraded with STARTTLS, required (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465 by default).
    Tls,
}

/// `kind = "smtp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 25 for `none`, 587 for `starttls`, 465 for `tls`.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender, `Name <address>` or `address`.
    pub from: String,
    pub reply_to: Option<String>,
    /// The name sent with EHLO (default: this host's name).
    pub hello_name: Option<String>,
    /// Connections kept open to the server.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
}

fn default_pool() -> u32 {
    4
}
