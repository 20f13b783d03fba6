//! What a send's result means for the notification: the one place retry policy is applied.

use std::time::Duration;

use notifyd_channels::{DeliveryError, Receipt};

use super::retry::backoff;
use crate::config::DispatcherConfig;
use crate::outbox::{AttemptRecord, Claimed, Completion, Outcome, State, now_ms};
use crate::registry::{AttemptKind, ChannelRuntime, RecentError};

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// Turns a send's result into the row's next state, logs it, and updates the channel's health.
///
/// - delivered → `delivered` with the provider's id;
/// - transient → `queued` after backoff (the provider's `Retry-After` may lengthen it), or `dead`
///   once `max_attempts` are spent (then the fallback route, if any);
/// - rate limited → `queued` after the provider's wait, the attempt refunded;
/// - invalid recipient or permanent → `failed` (then the fallback route, if any);
/// - channel fault → the channel is held for `fault_hold`, the row waits with its attempt refunded.
pub fn decide(
    rt: &ChannelRuntime,
    config: &DispatcherConfig,
    row: &Claimed,
    result: Result<Receipt, DeliveryError>,
    started_at_ms: i64,
    latency: Duration,
) -> Completion {
    let id = row.message.id.as_str();
    let attempt = row.attempt;
    let now = now_ms();
    let mut record = AttemptRecord {
        started_at_ms,
        latency_ms: millis(latency),
        outcome: String::new(),
        code: None,
        error: None,
        provider_id: None,
        decision: String::new(),
    };
    let err = match result {
        Ok(receipt) => {
            tracing::debug!(notification_id = %id, channel = %rt.name, attempt, latency_ms = record.latency_ms,
                "Delivered notification.");
            rt.record(AttemptKind::Delivered, None);
            record.outcome = "delivered".into();
            record.decision = "delivered".into();
            record.provider_id = receipt.provider_id.clone();
            return Completion {
                id: id.to_owned(),
                attempt,
                outcome: Outcome::Delivered {
                    provider_id: receipt.provider_id,
                },
                record: Some(record),
            };
        }
        Err(e) => e,
    };
    let code = err.code().to_owned();
    let message = err.to_string();
    record.outcome = err.class().into();
    record.code = Some(code.clone());
    record.error = Some(message.clone());
    let recent = Some(RecentError {
        class: err.class().into(),
        code: code.clone(),
        message: message.clone(),
        at_ms: now,
    });
    let policy = &rt.policy.retry;
    let outcome = match &err {
        DeliveryError::Transient { retry_after, .. } if attempt < policy.max_attempts => {
            let wait = backoff(policy, attempt, *retry_after, &mut rand::rng());
            tracing::warn!(notification_id = %id, channel = %rt.name, attempt, code = %code, retry_in_ms = millis(wait),
                error = %message, "Delivery failed; will retry.");
            rt.record(AttemptKind::Retried, recent);
            record.decision = "retry".into();
            Outcome::Retry {
                run_at_ms: now + millis(wait),
                refund_attempt: false,
                code,
                error: message,
            }
        }
        DeliveryError::Transient { .. } => {
            if rt.is_critical() {
                tracing::error!(notification_id = %id, channel = %rt.name, attempt, code = %code, error = %message,
                    critical = true, "Critical notification is dead: retries exhausted.");
            } else {
                tracing::warn!(notification_id = %id, channel = %rt.name, attempt, code = %code, error = %message,
                    "Notification is dead: retries exhausted.");
            }
            rt.record(AttemptKind::Failed, recent);
            record.decision = "dead".into();
            Outcome::Finish {
                state: State::Dead,
                code,
                error: message,
                fallback: true,
            }
        }
        DeliveryError::RateLimited { retry_after } => {
            let wait = retry_after
                .unwrap_or_else(|| backoff(policy, 1, None, &mut rand::rng()))
                .min(policy.max);
            tracing::warn!(notification_id = %id, channel = %rt.name, retry_in_ms = millis(wait),
                "Provider rate-limited the send; waiting without spending an attempt.");
            rt.record(AttemptKind::Retried, recent);
            record.decision = "rate_limited".into();
            Outcome::Retry {
                run_at_ms: now + millis(wait),
                refund_attempt: true,
                code,
                error: message,
            }
        }
        DeliveryError::InvalidRecipient { .. } | DeliveryError::Permanent { .. } => {
            tracing::warn!(notification_id = %id, channel = %rt.name, attempt, class = err.class(), code = %code,
                error = %message, "Notification rejected.");
            rt.record(AttemptKind::Failed, recent);
            record.decision = "failed".into();
            Outcome::Finish {
                state: State::Failed,
                code,
                error: message,
                fallback: true,
            }
        }
        DeliveryError::ChannelFault { .. } => {
            tracing::error!(channel = %rt.name, code = %code, error = %message, hold = ?config.fault_hold,
                "The provider refused our credentials or configuration; holding the channel. Its notifications stay queued.");
            rt.hold(config.fault_hold);
            rt.record(AttemptKind::Retried, recent);
            record.decision = "held".into();
            Outcome::Retry {
                run_at_ms: now + millis(config.fault_hold),
                refund_attempt: true,
                code,
                error: message,
            }
        }
    };
    Completion {
        id: id.to_owned(),
        attempt,
        outcome,
        record: Some(record),
    }
}
