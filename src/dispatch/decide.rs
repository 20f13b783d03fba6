//! What a send's result means for the notification: the one place retry policy is applied.

use std::time::{Duration, SystemTime};

use notifyd_channels::{DeliveryError, Receipt};

use super::retry::backoff;
use crate::config::DispatcherConfig;
use crate::outbox::{AttemptRecord, Claimed, Completion, Outcome, State, now_ms};
use crate::policy::Verdict;
use crate::registry::{AttemptKind, ChannelRuntime, RecentError};

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The next failover channel for a notification: the first configured one it has not tried.
pub fn failover_target<'a>(rt: &'a ChannelRuntime, row: &Claimed) -> Option<&'a str> {
    rt.policy
        .failover
        .iter()
        .find(|c| **c != rt.name && !row.tried.contains(c))
        .map(String::as_str)
}

/// Turns a send's result into the row's next state and the breaker's verdict, logs it, and
/// updates the channel's health.
///
/// - delivered → `delivered` with the provider's id;
/// - transient → `queued` after backoff (the provider's `Retry-After` may lengthen it); once
///   `max_attempts` are spent or the notification is older than `max_age`: failover to the next
///   channel if one is configured, else `dead` (then the notification's own fallback route);
/// - rate limited → `queued` after the provider's wait, attempt refunded, and the whole channel
///   waits that long (the limit is the account's, not the message's);
/// - invalid recipient or permanent → `failed` (then the fallback route, if any); never failover;
/// - channel fault → the channel is held for `fault_hold`, the row waits with its attempt refunded.
pub fn decide(
    rt: &ChannelRuntime,
    config: &DispatcherConfig,
    row: &Claimed,
    result: Result<Receipt, DeliveryError>,
    started_at_ms: i64,
    latency: Duration,
) -> (Completion, Verdict) {
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
    rt.stats.attempt(
        match &result {
            Ok(_) => "delivered",
            Err(e) => e.class(),
        },
        latency,
    );
    let completion = |outcome, record| Completion {
        id: id.to_owned(),
        attempt,
        outcome,
        record: Some(record),
    };
    let err = match result {
        Ok(receipt) => {
            tracing::debug!(notification_id = %id, channel = %rt.name, attempt, latency_ms = record.latency_ms,
                "Delivered notification.");
            rt.record(AttemptKind::Delivered, None);
            record.outcome = "delivered".into();
            record.decision = "delivered".into();
            record.provider_id = receipt.provider_id.clone();
            let outcome = Outcome::Delivered {
                provider_id: receipt.provider_id,
            };
            return (completion(outcome, record), Verdict::Success);
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
    let too_old = policy.max_age.is_some_and(|max| {
        SystemTime::now()
            .duration_since(row.message.created_at)
            .is_ok_and(|age| age >= max)
    });
    let (outcome, verdict) = match &err {
        DeliveryError::Transient { retry_after, .. }
            if attempt < policy.max_attempts && !too_old =>
        {
            let wait = backoff(policy, attempt, *retry_after, &mut rand::rng());
            tracing::warn!(notification_id = %id, channel = %rt.name, attempt, code = %code, retry_in_ms = millis(wait),
                error = %message, "Delivery failed; will retry.");
            rt.record(AttemptKind::Retried, recent);
            record.decision = "retry".into();
            let outcome = Outcome::Retry {
                run_at_ms: now + millis(wait),
                refund_attempt: false,
                code,
                error: message,
            };
            (outcome, Verdict::Failure)
        }
        DeliveryError::Transient { .. } => {
            let why = if too_old {
                "max_age reached"
            } else {
                "retries exhausted"
            };
            if let Some(target) = failover_target(rt, row) {
                tracing::warn!(notification_id = %id, channel = %rt.name, to_channel = target, attempt, code = %code,
                    "Failing over to the next channel: {why}.");
                rt.record(AttemptKind::Retried, recent);
                record.decision = format!("failed_over:{target}");
                let outcome = Outcome::Reroute {
                    channel: target.to_owned(),
                    code,
                    error: format!("{why} on {}: {message}", rt.name),
                };
                (outcome, Verdict::Failure)
            } else {
                if rt.is_critical() {
                    rt.record_dead_critical();
                    tracing::error!(notification_id = %id, channel = %rt.name, attempt, code = %code, error = %message,
                        critical = true, "Critical notification is dead: {why}.");
                } else {
                    tracing::warn!(notification_id = %id, channel = %rt.name, attempt, code = %code, error = %message,
                        "Notification is dead: {why}.");
                }
                rt.record(AttemptKind::Failed, recent);
                record.decision = "dead".into();
                let outcome = Outcome::Finish {
                    state: State::Dead,
                    code,
                    error: message,
                    fallback: true,
                };
                (outcome, Verdict::Failure)
            }
        }
        DeliveryError::RateLimited { retry_after } => {
            let wait = retry_after
                .unwrap_or_else(|| backoff(policy, 1, None, &mut rand::rng()))
                .min(policy.max);
            if retry_after.is_some() {
                rt.hold(wait, "the provider asked to wait (Retry-After)");
            }
            tracing::warn!(notification_id = %id, channel = %rt.name, retry_in_ms = millis(wait),
                "Provider rate-limited the send; waiting without spending an attempt.");
            rt.record(AttemptKind::Retried, recent);
            record.decision = "rate_limited".into();
            let outcome = Outcome::Retry {
                run_at_ms: now + millis(wait),
                refund_attempt: true,
                code,
                error: message,
            };
            (outcome, Verdict::Neutral)
        }
        DeliveryError::InvalidRecipient { .. } | DeliveryError::Permanent { .. } => {
            tracing::warn!(notification_id = %id, channel = %rt.name, attempt, class = err.class(), code = %code,
                error = %message, "Notification rejected.");
            rt.record(AttemptKind::Failed, recent);
            record.decision = "failed".into();
            let outcome = Outcome::Finish {
                state: State::Failed,
                code,
                error: message,
                fallback: true,
            };
            (outcome, Verdict::Neutral)
        }
        DeliveryError::ChannelFault { .. } => {
            tracing::error!(channel = %rt.name, code = %code, error = %message, hold = ?config.fault_hold,
                "The provider refused our credentials or configuration; holding the channel. Its notifications stay queued.");
            rt.hold(
                config.fault_hold,
                "the provider refused our credentials or configuration",
            );
            rt.record(AttemptKind::Retried, recent);
            record.decision = "held".into();
            let outcome = Outcome::Retry {
                run_at_ms: now + millis(config.fault_hold),
                refund_attempt: true,
                code,
                error: message,
            };
            (outcome, Verdict::Neutral)
        }
    };
    (completion(outcome, record), verdict)
}
