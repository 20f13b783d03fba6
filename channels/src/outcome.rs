use std::time::Duration;

/// Why a send did not deliver, in the classes the dispatcher decides on.
///
/// Each provider maps its own answers into exactly one of these at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: 5xx, timeouts, connection resets, SMTP 4xx, malformed answers.
    #[error("transient failure ({code}): {reason}")]
    Transient {
        code: String,
        reason: String,
        /// The provider's `Retry-After`, if it gave one: lengthens our backoff, never shortens it.
        retry_after: Option<Duration>,
    },
    /// The provider asked us to slow down; costs no attempt.
    #[error("rate limited by the provider")]
    RateLimited { retry_after: Option<Duration> },
    /// The recipient cannot receive (bad number, dead push token, unknown mailbox): fail, report.
    #[error("invalid recipient ({code}): {reason}")]
    InvalidRecipient { code: String, reason: String },
    /// The provider refused the message for a reason retrying cannot fix.
    #[error("permanent failure ({code}): {reason}")]
    Permanent { code: String, reason: String },
    /// Our own credentials or configuration were refused: hold the channel, alert an operator,
    /// and keep the notifications queued.
    #[error("channel fault ({code}): {reason}")]
    ChannelFault { code: String, reason: String },
}

impl DeliveryError {
    /// A transient error with no provider hint about when to retry.
    pub fn transient(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Transient {
            code: code.into(),
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A permanent rejection.
    pub fn permanent(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Permanent {
            code: code.into(),
            reason: reason.into(),
        }
    }

    /// A rejected recipient.
    pub fn invalid_recipient(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidRecipient {
            code: code.into(),
            reason: reason.into(),
        }
    }

    /// Our credentials or configuration were refused.
    pub fn channel_fault(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::ChannelFault {
            code: code.into(),
            reason: reason.into(),
        }
    }

    /// The outcome class as recorded on attempts and in metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Transient { .. } => "transient",
            Self::RateLimited { .. } => "rate_limited",
            Self::InvalidRecipient { .. } => "invalid_recipient",
            Self::Permanent { .. } => "permanent",
            Self::ChannelFault { .. } => "channel_fault",
        }
    }

    /// The specific code (`http_503`, `timeout`, `21211`, `UNREGISTERED`, ...).
    pub fn code(&self) -> &str {
        match self {
            Self::Transient { code, .. }
            | Self::InvalidRecipient { code, .. }
            | Self::Permanent { code, .. }
            | Self::ChannelFault { code, .. } => code,
            Self::RateLimited { .. } => "rate_limited",
        }
    }

    /// The provider's requested wait, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } | Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}
