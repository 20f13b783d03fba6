//! The `log` channel: writes each notification to the daemon's log and counts it delivered.
//!
//! It needs no provider account, so the default config uses it and a newcomer can watch the whole
//! path work.

use async_trait::async_trait;
use serde::Deserialize;

use crate::redact::mask_recipient;
use crate::{BuildContext, Channel, DeliveryError, FieldError, Message, Receipt, SendContext};

/// `kind = "log"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Also log the subject and body (default true: showing them is what this channel is for).
    #[serde(default = "yes")]
    pub content: bool,
}

fn yes() -> bool {
    true
}

/// A channel that delivers to the log.
#[derive(Debug)]
pub struct Log {
    content: bool,
}

impl Log {
    /// Builds the channel; it has nothing to set up.
    pub fn new(cfg: &LogConfig, _ctx: &BuildContext) -> Self {
        Self {
            content: cfg.content,
        }
    }
}

#[async_trait]
impl Channel for Log {
    fn kind(&self) -> &'static str {
        "log"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        if msg.to.trim().is_empty() {
            return Err(FieldError::new(
                "to",
                "invalid_recipient",
                "must not be empty",
            ));
        }
        Ok(())
    }

    async fn send(&self, msg: &Message, ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let to = mask_recipient(&msg.to);
        if self.content {
            tracing::info!(
                notification_id = %msg.id,
                channel = %msg.channel,
                to = %to,
                attempt = ctx.attempt,
                subject = msg.subject.as_deref().unwrap_or(""),
                body = msg.body.as_deref().unwrap_or(""),
                "Notification written to the log."
            );
        } else {
            tracing::info!(
                notification_id = %msg.id,
                channel = %msg.channel,
                to = %to,
                attempt = ctx.attempt,
                "Notification written to the log."
            );
        }
        Ok(Receipt {
            provider_id: Some(format!("log:{}", msg.id)),
        })
    }
}
