use async_trait::async_trait;

use crate::{DeliveryError, FieldError, Message, Receipt};

/// What the dispatcher tells a channel about this delivery attempt.
#[derive(Debug, Clone)]
pub struct SendContext {
    /// 1 for the first attempt, incremented by every claim of the notification.
    pub attempt: u32,
    /// Deterministic per notification (never per attempt), so a provider or receiver that
    /// de-duplicates can drop the re-send of an attempt that was in flight at a crash.
    pub idempotency_key: String,
}

/// One way of delivering a notification: a provider API behind one configured channel.
///
/// Implementations are policy-free: they send once and say what happened.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Stable kind name used in config, logs and metrics (`"twilio"`, `"smtp"`, `"webhook"`, ...).
    fn kind(&self) -> &'static str;

    /// Checks a recipient and content before the notification is accepted, so that a bad phone
    /// number or a missing body is the caller's 422 rather than a failure discovered later.
    fn validate(&self, msg: &Message) -> Result<(), FieldError>;

    /// Delivers once. Never retries by itself; classifies every outcome.
    async fn send(&self, msg: &Message, ctx: &SendContext) -> Result<Receipt, DeliveryError>;
}
