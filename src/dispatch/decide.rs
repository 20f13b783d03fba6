//! What a send's result means for the notification: the one place retry policy is applied.

use std::time::{Duration, SystemTime};

use notifyd_channels::redact::mask_in;
use notifyd_channels::{DeliveryError, Receipt};
use tokio::time::Instant;

use super::retry::backoff;
use crate::config::DispatcherConfig;
use crate::outbox::{AttemptRecord, Claimed, Completion, Outcome, State, now_ms};
use crate::policy::Verdict;
use crate::registry::{AttemptKind, ChannelRuntime, RecentError};

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The next failover channel for a notification ([`crate::outbox::failover::failover_target`]).
pub fn failover_target<'a>(rt: &'a ChannelRuntime, row: &Claimed) -> Option<&'a str> {
    crate::outbox::failover::failover_target(&rt.policy.failover, &rt.name, &row.tried)
}

/// A row claimed more often than its budget allows without an outcome recorded in between (each
/// claim counts an attempt; only a crash or a completion that could not be written leaves one
/// unrecorded) is not sent again: it ends `dead` with `outcome_not_recorded`, replayable. One
/// claim past `max_attempts` is still sent, so a crash during the last attempt costs no send.
pub fn past_budget(rt: &ChannelRuntime, row: &Claimed) -> Option<Completion> {
    let max = rt.policy.retry.max_attempts;
    if row.attempt <= max.saturating_add(1) {
        return None;
    }
    tracing::error!(notification_id = %row.message.id, channel = %rt.name, attempt = row.attempt,
        max_attempts = max, "Claimed past its attempt budget without a recorded outcome: not sent again.");
    Some(Completion {
        id: row.message.id.clone(),
        attempt: row.attempt,
        lease: row.lease,
        outcome: Outcome::Finish {
            state: State::Dead,
            code: "outcome_not_recorded".into(),
            error: format!(
                "claimed {} times, more than max_attempts ({max}) allows, without a recorded outcome: not sent again",
                row.attempt
            ),
            fallback: false,
        },
        record: None,
    })
}

/// What a send's result says about the provider's health, for its breaker: only retryable
/// failures count against it.
pub fn verdict(result: &Result<Receipt, DeliveryError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Success,
        Err(DeliveryError::Transient { .. }) => Verdict::Failure,
        Err(_) => Verdict::Neutral,
    }
}

/// Turns a send's result into the row's next state, logs it, and updates the channel's health.
///
/// `next_probe` is set when the send was a half-open probe whose retryable failure re-opened
/// the breaker ([`crate::policy::Breaker::record`]).
///
/// - delivered → `delivered` with the provider's id;
/// - failed probe → like every notification deferred by the open breaker: to the next failover
///   channel if there is one, else `queued` until the next probe with its attempt refunded
///   (decision `probe_failed`), so an outage never spends attempts one probe at a time. Past
///   `max_age` it is treated like any transient failure (an endless outage still ends);
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
    next_probe: Option<Instant>,
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
        lease: row.lease,
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
            return completion(outcome, record);
        }
        Err(e) => e,
    };
    let code = err.code().to_owned();
    let message = err.to_string();
    // Provider errors often quote the recipient ("The 'To' number +1555… is not valid", SMTP
    // 550 replies): logs and the channel's health get it masked, the attempt row keeps it.
    let masked = mask_in(&message, &row.message.to);
    record.outcome = err.class().into();
    record.code = Some(code.clone());
    record.error = Some(message.clone());
    let recent = Some(RecentError {
        class: err.class().into(),
        code: code.clone(),
        message: masked.clone(),
        at_ms: now,
    });
    let policy = &rt.policy.retry;
    let too_old = policy.max_age.is_some_and(|max| {
        SystemTime::now()
            .duration_since(row.message.created_at)
            .is_ok_and(|age| age >= max)
    });
    let outcome = match &err {
        DeliveryError::Transient { .. } if next_probe.is_some() && !too_old => {
            let until = next_probe.unwrap_or_else(Instant::now);
            let wait = until.saturating_duration_since(Instant::now());
            rt.record(AttemptKind::Retried, recent);
            if let Some(target) = failover_target(rt, row) {
                tracing::warn!(notification_id = %id, channel = %rt.name, to_channel = target, attempt, code = %code,
                    error = %masked, "Breaker probe failed; failing over to the next channel.");
                record.decision = format!("failed_over:{target}");
                Outcome::Reroute {
                    channel: target.to_owned(),
                    code,
                    error: format!("breaker open on {}: {message}", rt.name),
                }
            } else {
                tracing::warn!(notification_id = %id, channel = %rt.name, attempt, code = %code, retry_in_ms = millis(wait),
                    error = %masked, "Breaker probe failed; waiting for the next probe without spending an attempt.");
                record.decision = "probe_failed".into();
                Outcome::Retry {
                    run_at_ms: now + millis(wait),
                    refund_attempt: true,
                    code,
                    error: message,
                }
            }
        }
        DeliveryError::Transient { retry_after, .. }
            if attempt < policy.max_attempts && !too_old =>
        {
            let wait = backoff(policy, attempt, *retry_after, &mut rand::rng());
            tracing::warn!(notification_id = %id, channel = %rt.name, attempt, code = %code, retry_in_ms = millis(wait),
                error = %masked, "Delivery failed; will retry.");
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
                Outcome::Reroute {
                    channel: target.to_owned(),
                    code,
                    error: format!("{why} on {}: {message}", rt.name),
                }
            } else {
                if rt.is_critical() {
                    rt.record_dead_critical();
                    tracing::error!(notification_id = %id, channel = %rt.name, attempt, code = %code, error = %masked,
                        critical = true, "Critical notification is dead: {why}.");
                } else {
                    tracing::warn!(notification_id = %id, channel = %rt.name, attempt, code = %code, error = %masked,
                        "Notification is dead: {why}.");
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
            Outcome::Retry {
                run_at_ms: now + millis(wait),
                refund_attempt: true,
                code,
                error: message,
            }
        }
        DeliveryError::InvalidRecipient { .. } | DeliveryError::Permanent { .. } => {
            tracing::warn!(notification_id = %id, channel = %rt.name, attempt, class = err.class(), code = %code,
                error = %masked, "Notification rejected.");
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
            tracing::error!(notification_id = %id, channel = %rt.name, code = %code, error = %masked, hold = ?config.fault_hold,
                "The provider refused our credentials or configuration; holding the channel. Its notifications stay queued.");
            rt.hold(
                config.fault_hold,
                "the provider refused our credentials or configuration",
            );
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
    completion(outcome, record)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use figment::providers::Env;

    use super::*;
    use crate::config::Config;
    use crate::registry::Registry;

    const TO: &str = "+15551234567";

    fn runtime(policy: &str) -> Arc<ChannelRuntime> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifyd.toml");
        let text = format!(
            "[channels.sms]\nkind = \"log\"\n{policy}\n[channels.sms-backup]\nkind = \"log\"\n"
        );
        std::fs::write(&path, text).unwrap();
        let config =
            Config::load_with_env(Some(&path), Env::prefixed("NOTIFYD_UNIT_UNUSED_")).unwrap();
        Registry::build(&config)
            .unwrap()
            .get("sms")
            .unwrap()
            .clone()
    }

    fn row(attempt: u32, age: Duration) -> Claimed {
        Claimed {
            message: notifyd_channels::Message {
                id: "n1".into(),
                channel: "sms".into(),
                to: TO.into(),
                subject: None,
                body: Some("hi".into()),
                html: None,
                data: None,
                created_at: SystemTime::now() - age,
            },
            attempt,
            lease: crate::outbox::LeaseToken(i64::from(attempt)),
            expires_at_ms: None,
            tried: Vec::new(),
            validation: crate::outbox::Validation::Done,
        }
    }

    fn run(rt: &ChannelRuntime, row: &Claimed, next_probe: Option<Instant>) -> Completion {
        let err = DeliveryError::transient("http_503", "unavailable");
        decide(
            rt,
            &DispatcherConfig::default(),
            row,
            Err(err),
            now_ms(),
            Duration::from_millis(3),
            next_probe,
        )
    }

    #[tokio::test]
    async fn a_failed_probe_waits_for_the_next_probe_and_refunds_its_attempt() {
        let rt = runtime("retry = { max_attempts = 2 }");
        let before = now_ms();
        let next = Instant::now() + Duration::from_secs(5);
        // The last allowed attempt: without the breaker's word this would be dead.
        let c = run(&rt, &row(2, Duration::ZERO), Some(next));
        match c.outcome {
            Outcome::Retry {
                run_at_ms,
                refund_attempt,
                ..
            } => {
                assert!(refund_attempt);
                assert!(
                    (before + 4_900..=now_ms() + 5_000).contains(&run_at_ms),
                    "due at the next probe, not after backoff: {}",
                    run_at_ms - before
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.record.unwrap().decision, "probe_failed");
    }

    #[tokio::test]
    async fn the_same_failure_outside_a_probe_spends_the_last_attempt() {
        let rt = runtime("retry = { max_attempts = 2 }");
        let c = run(&rt, &row(2, Duration::ZERO), None);
        assert!(
            matches!(
                c.outcome,
                Outcome::Finish {
                    state: State::Dead,
                    ..
                }
            ),
            "{:?}",
            c.outcome
        );
    }

    #[tokio::test]
    async fn a_failed_probe_fails_over_when_the_channel_has_a_failover() {
        let rt = runtime("failover = [\"sms-backup\"]");
        let c = run(
            &rt,
            &row(1, Duration::ZERO),
            Some(Instant::now() + Duration::from_secs(5)),
        );
        assert!(
            matches!(&c.outcome, Outcome::Reroute { channel, .. } if channel == "sms-backup"),
            "{:?}",
            c.outcome
        );
        assert_eq!(c.record.unwrap().decision, "failed_over:sms-backup");
    }

    #[tokio::test]
    async fn a_failed_probe_past_max_age_ends_so_an_endless_outage_terminates() {
        let rt = runtime("retry = { max_attempts = 5, max_age = \"1h\" }");
        let c = run(
            &rt,
            &row(1, Duration::from_secs(7200)),
            Some(Instant::now() + Duration::from_secs(5)),
        );
        assert!(
            matches!(
                c.outcome,
                Outcome::Finish {
                    state: State::Dead,
                    ..
                }
            ),
            "{:?}",
            c.outcome
        );
    }

    #[tokio::test]
    async fn the_recipient_quoted_by_a_provider_is_masked_in_the_channel_health() {
        let rt = runtime("");
        let reason = format!("21211: The 'To' number {TO} is not a valid phone number.");
        let c = decide(
            &rt,
            &DispatcherConfig::default(),
            &row(1, Duration::ZERO),
            Err(DeliveryError::invalid_recipient("21211", reason)),
            now_ms(),
            Duration::ZERO,
            None,
        );
        let shown = rt.health().last_error.unwrap().message;
        assert!(!shown.contains(TO), "{shown}");
        assert!(shown.contains("+155***67"), "{shown}");
        // The attempt row, behind the API's own access control, keeps what the provider said.
        assert!(c.record.unwrap().error.unwrap().contains(TO));
    }

    #[test]
    fn every_occurrence_of_the_recipient_is_masked() {
        assert_eq!(
            mask_in("The 'To' number +15551234567 (+15551234567) is invalid", TO),
            "The 'To' number +155***67 (+155***67) is invalid"
        );
    }

    #[test]
    fn an_address_is_masked_whatever_case_the_mail_server_used() {
        assert_eq!(
            mask_in(
                "550 5.1.1 <Alice@Example.COM>: Recipient address rejected",
                "alice@example.com"
            ),
            "550 5.1.1 <a***@example.com>: Recipient address rejected"
        );
    }

    #[test]
    fn text_without_the_recipient_is_unchanged() {
        assert_eq!(mask_in("503 unavailable", TO), "503 unavailable");
        assert_eq!(mask_in("503 unavailable", ""), "503 unavailable");
    }

    #[test]
    fn non_ascii_text_around_the_recipient_survives() {
        assert_eq!(
            mask_in("Empfänger +15551234567 ungültig", TO),
            "Empfänger +155***67 ungültig"
        );
    }
}
