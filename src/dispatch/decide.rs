//! What a send's result means for the notification: the one place retry policy is applied. A
//! pure function of the row, the result and the time: it returns a [`Decision`] (the row's
//! completion, a hold for the channel, the effect on its health) that the send path applies.

use std::fmt;
use std::time::Duration;

use notifyd_channels::redact::mask_in;
use notifyd_channels::{DeliveryError, Receipt};
use rand::Rng;

use super::retry::backoff;
use crate::channel_stats::AttemptClass;
use crate::clock::{self, Instant, WallMs};
use crate::config::{ChannelPolicy, Criticality};
use crate::outbox::{AttemptRecord, Claimed, Completion, Outcome, State};
use crate::policy::{HoldReason, Unsent, Verdict};
use crate::registry::{AttemptKind, RecentError};

/// What was decided for a notification after an attempt: the `decision` of its attempt record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecisionKind {
    Delivered,
    /// Back to the queue after backoff.
    Retry,
    /// A half-open probe failed: back to the queue until the next probe, attempt refunded.
    ProbeFailed,
    /// Moved to the next failover channel.
    FailedOver {
        to: String,
        why: Ended,
    },
    /// Retries ended without a failover channel left.
    Dead {
        why: Ended,
    },
    /// The provider rate-limited the send: back after its wait, attempt refunded.
    RateLimited,
    /// Rejected for good (invalid recipient, permanent error).
    Failed,
    /// The provider refused our credentials or configuration: the channel is held.
    Held,
    /// Not sent: its recipient was over its own rate limit.
    WaitedForRateLimit,
}

impl DecisionKind {
    /// The name of the decision (without a failover's target).
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::ProbeFailed => "probe_failed",
            Self::FailedOver { .. } => "failed_over",
            Self::Dead { .. } => "dead",
            Self::RateLimited => "rate_limited",
            Self::Failed => "failed",
            Self::Held => "held",
            Self::WaitedForRateLimit => "waited_for_rate_limit",
        }
    }
}

/// As stored in the attempt record: `failed_over:<channel>`, else [`DecisionKind::as_str`].
impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FailedOver { to, .. } => write!(f, "failed_over:{to}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Why a notification stopped being retried on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// A half-open probe failed and a failover channel is left.
    BreakerOpen,
    RetriesExhausted,
    MaxAgeReached,
}

impl Ended {
    /// As written in logs and the row's last error.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::BreakerOpen => "breaker open",
            Self::RetriesExhausted => "retries exhausted",
            Self::MaxAgeReached => "max_age reached",
        }
    }
}

/// What the decision does to the channel's health counters.
#[derive(Debug, Clone)]
pub(crate) struct HealthEffect {
    pub counted: AttemptKind,
    /// The failure, the recipient masked.
    pub error: Option<RecentError>,
    /// A critical channel's notification ended dead: alert.
    pub dead_critical: bool,
}

/// Everything an attempt's outcome changes, for the caller to apply.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    pub kind: DecisionKind,
    pub class: AttemptClass,
    /// The row's next state, with its attempt record.
    pub completion: Completion,
    /// The whole channel stops sending for this long.
    pub hold: Option<(Duration, HoldReason)>,
    pub health: HealthEffect,
    /// When the notification is due again, if it went back to the queue.
    pub retry_in: Option<Duration>,
}

/// The policy `decide` applies: the channel's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules<'a> {
    pub channel: &'a str,
    pub policy: &'a ChannelPolicy,
    /// How long a channel whose credentials were refused is held.
    pub fault_hold: Duration,
}

/// What came back from the provider.
#[derive(Debug)]
pub(crate) struct Sent {
    pub result: Result<Receipt, DeliveryError>,
    pub started_at_ms: WallMs,
    pub latency: Duration,
    /// Set when the send was a half-open probe whose retryable failure re-opened the breaker
    /// ([`crate::policy::SendPermit::record`]): how long until the next probe.
    pub next_probe_in: Option<Duration>,
}

/// The next failover channel for a notification ([`crate::outbox::failover::failover_target`]).
pub(super) fn failover_target<'a>(rules: &Rules<'a>, row: &Claimed) -> Option<&'a str> {
    crate::outbox::failover::failover_target(&rules.policy.failover, rules.channel, &row.tried)
}

/// What a send's result says about the provider's health, for its breaker: only retryable
/// failures count against it.
pub(super) fn verdict(result: &Result<Receipt, DeliveryError>) -> Verdict {
    match result {
        Ok(_) => Verdict::Success,
        Err(DeliveryError::Transient { .. }) => Verdict::Failure,
        Err(_) => Verdict::Neutral,
    }
}

/// Turns a send's result into the row's next state and its effects, at wall time `now`.
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
pub(crate) fn decide(
    rules: &Rules<'_>,
    row: &Claimed,
    sent: Sent,
    now: WallMs,
    rng: &mut impl Rng,
) -> Decision {
    let attempt = row.attempt;
    let class = AttemptClass::of(&sent.result);
    let mut record = AttemptRecord {
        started_at_ms: sent.started_at_ms,
        latency_ms: clock::millis(sent.latency),
        outcome: class.as_str().into(),
        code: None,
        error: None,
        provider_id: None,
        decision: String::new(),
        channel: row.message.channel.as_str().into(),
    };
    let err = match sent.result {
        Ok(receipt) => {
            record.provider_id = receipt.provider_id.clone();
            let outcome = Outcome::Delivered {
                provider_id: receipt.provider_id,
            };
            let health = HealthEffect {
                counted: AttemptKind::Delivered,
                error: None,
                dead_critical: false,
            };
            return finish(
                row,
                DecisionKind::Delivered,
                class,
                outcome,
                record,
                None,
                health,
                None,
            );
        }
        Err(e) => e,
    };
    let code = err.code().to_owned();
    let message = err.to_string();
    record.code = Some(code.clone());
    record.error = Some(message.clone());
    // Provider errors often quote the recipient ("The 'To' number +1555… is not valid", SMTP
    // 550 replies): logs and the channel's health get it masked, the attempt row keeps it.
    let recent = RecentError {
        class,
        code: code.clone(),
        message: mask_in(&message, &row.message.to),
        at_ms: now,
    };
    let policy = &rules.policy.retry;
    let age = Duration::from_millis(
        u64::try_from(now - clock::wall_ms(row.message.created_at)).unwrap_or(0),
    );
    let too_old = policy.max_age.is_some_and(|max| age >= max);
    let retried = |error| HealthEffect {
        counted: AttemptKind::Retried,
        error: Some(error),
        dead_critical: false,
    };
    let retry = |wait: Duration, refund_attempt: bool, code: String, error: String| {
        (
            Outcome::Retry {
                run_at_ms: now + clock::millis(wait),
                refund_attempt,
                code,
                error,
            },
            Some(wait),
        )
    };
    let mut hold = None;
    let (kind, (outcome, retry_in), health) = match &err {
        DeliveryError::Transient { .. } if sent.next_probe_in.is_some() && !too_old => {
            let wait = sent.next_probe_in.unwrap_or_default();
            match failover_target(rules, row) {
                Some(to) => {
                    let (kind, outcome) =
                        fail_over(rules.channel, to, Ended::BreakerOpen, code, &message);
                    (kind, (outcome, None), retried(recent))
                }
                None => (
                    DecisionKind::ProbeFailed,
                    retry(wait, true, code, message),
                    retried(recent),
                ),
            }
        }
        DeliveryError::Transient { retry_after, .. }
            if attempt < policy.max_attempts && !too_old =>
        {
            let wait = backoff(policy, attempt, *retry_after, rng);
            (
                DecisionKind::Retry,
                retry(wait, false, code, message),
                retried(recent),
            )
        }
        DeliveryError::Transient { .. } => {
            let why = if too_old {
                Ended::MaxAgeReached
            } else {
                Ended::RetriesExhausted
            };
            match failover_target(rules, row) {
                Some(to) => {
                    let (kind, outcome) = fail_over(rules.channel, to, why, code, &message);
                    (kind, (outcome, None), retried(recent))
                }
                None => {
                    let outcome = Outcome::Finish {
                        state: State::Dead,
                        code,
                        error: message,
                        fallback: true,
                    };
                    let health = HealthEffect {
                        counted: AttemptKind::Failed,
                        error: Some(recent),
                        dead_critical: rules.policy.criticality == Criticality::Critical,
                    };
                    (DecisionKind::Dead { why }, (outcome, None), health)
                }
            }
        }
        DeliveryError::RateLimited { retry_after } => {
            let wait = retry_after
                .unwrap_or_else(|| backoff(policy, 1, None, rng))
                .min(policy.max);
            if retry_after.is_some() {
                hold = Some((wait, HoldReason::RetryAfter));
            }
            (
                DecisionKind::RateLimited,
                retry(wait, true, code, message),
                retried(recent),
            )
        }
        DeliveryError::InvalidRecipient { .. } | DeliveryError::Permanent { .. } => {
            let outcome = Outcome::Finish {
                state: State::Failed,
                code,
                error: message,
                fallback: true,
            };
            let health = HealthEffect {
                counted: AttemptKind::Failed,
                error: Some(recent),
                dead_critical: false,
            };
            (DecisionKind::Failed, (outcome, None), health)
        }
        DeliveryError::ChannelFault { .. } => {
            hold = Some((rules.fault_hold, HoldReason::ChannelFault));
            (
                DecisionKind::Held,
                retry(rules.fault_hold, true, code, message),
                retried(recent),
            )
        }
    };
    finish(row, kind, class, outcome, record, hold, health, retry_in)
}

/// A move to the failover channel `to`: the row keeps its id and recipient.
fn fail_over(
    channel: &str,
    to: &str,
    why: Ended,
    code: String,
    message: &str,
) -> (DecisionKind, Outcome) {
    let outcome = Outcome::Reroute {
        channel: to.into(),
        code,
        error: format!("{} on {channel}: {message}", why.as_str()),
    };
    let kind = DecisionKind::FailedOver {
        to: to.to_owned(),
        why,
    };
    (kind, outcome)
}

#[allow(clippy::too_many_arguments)] // the parts of a Decision, assembled in one place
fn finish(
    row: &Claimed,
    kind: DecisionKind,
    class: AttemptClass,
    outcome: Outcome,
    mut record: AttemptRecord,
    hold: Option<(Duration, HoldReason)>,
    health: HealthEffect,
    retry_in: Option<Duration>,
) -> Decision {
    record.decision = kind.to_string();
    Decision {
        kind,
        class,
        completion: Completion {
            events: Vec::new(),
            id: row.message.id.clone().into(),
            attempt: row.attempt,
            lease: row.lease,
            outcome,
            record: Some(record),
        },
        hold,
        health,
        retry_in,
    }
}

/// The completion of a claimed row that was not sent, at wall time `now_ms` (policy time
/// `now`): given back with its attempt refunded, expired, or, when its recipient is over its own
/// limit, due again at that recipient's next token (recorded, so the wait is visible).
pub(crate) fn unsent(row: &Claimed, why: Unsent, now_ms: WallMs, now: Instant) -> Completion {
    let (id, attempt, lease) = (row.message.id.clone(), row.attempt, row.lease);
    match why {
        Unsent::Expired => Completion {
            events: Vec::new(),
            id: id.into(),
            attempt,
            lease,
            outcome: Outcome::Finish {
                state: State::Expired,
                code: "expired".into(),
                error: "expires_at passed before it could be sent".into(),
                fallback: false,
            },
            record: None,
        },
        Unsent::RecipientLimited { next } => {
            let wait = next.saturating_duration_since(now);
            let code = "recipient_rate_limited";
            let error = format!("this recipient's rate limit allows the next send in {wait:?}");
            Completion {
                events: Vec::new(),
                id: id.into(),
                attempt,
                lease,
                outcome: Outcome::Retry {
                    run_at_ms: now_ms + clock::millis(wait),
                    refund_attempt: true,
                    code: code.to_owned(),
                    error: error.clone(),
                },
                record: Some(AttemptRecord {
                    started_at_ms: now_ms,
                    latency_ms: 0,
                    outcome: NOT_SENT.into(),
                    code: Some(code.to_owned()),
                    error: Some(error),
                    provider_id: None,
                    decision: DecisionKind::WaitedForRateLimit.to_string(),
                    channel: row.message.channel.as_str().into(),
                }),
            }
        }
        // Due when the shared bucket has a token again; the next claim finds it then.
        Unsent::ChannelLimited { next } => Completion {
            id: id.into(),
            attempt,
            lease,
            outcome: Outcome::Retry {
                run_at_ms: now_ms + clock::millis(next.saturating_duration_since(now)),
                refund_attempt: true,
                code: "channel_rate_limited".into(),
                error: "the channel's shared rate limit had no token before the lease ran short"
                    .into(),
            },
            record: None,
            events: Vec::new(),
        },
        Unsent::Stopping
        | Unsent::WaitedTooLongForASlot
        | Unsent::ChannelHeld
        | Unsent::BreakerOpened
        | Unsent::LimitUnreadable => released(row),
    }
}

/// The completion of a row given back unsent, its attempt refunded: before any send, or after
/// an abandoned one.
pub(crate) fn released(row: &Claimed) -> Completion {
    Completion {
        events: Vec::new(),
        id: row.message.id.clone().into(),
        attempt: row.attempt,
        lease: row.lease,
        outcome: Outcome::Release,
        record: None,
    }
}

/// A row claimed more often than its budget allows without an outcome recorded in between (each
/// claim counts an attempt; only a crash or a completion that could not be written leaves one
/// unrecorded) is not sent again: it ends `dead` with `outcome_not_recorded`, replayable. One
/// claim past `max_attempts` is still sent, so a crash during the last attempt costs no send.
pub(super) fn past_budget(rules: &Rules<'_>, row: &Claimed) -> Option<Completion> {
    let max = rules.policy.retry.max_attempts;
    if row.attempt <= max.saturating_add(1) {
        return None;
    }
    tracing::error!(notification_id = %row.message.id, channel = %rules.channel, attempt = row.attempt,
        max_attempts = max, "Claimed past its attempt budget without a recorded outcome: not sent again.");
    Some(Completion {
        events: Vec::new(),
        id: row.message.id.clone().into(),
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

/// The `outcome` of an attempt record for a row that never reached the provider.
pub(super) const NOT_SENT: &str = "not_sent";

#[cfg(test)]
mod tests {
    use figment::providers::Env;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::config::Config;

    const TO: &str = "+15551234567";
    const NOW: WallMs = 1_800_000_000_000;

    fn policy(extra: &str) -> ChannelPolicy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifyd.toml");
        let text = format!(
            "[channels.sms]\nkind = \"log\"\n{extra}\n[channels.sms-backup]\nkind = \"log\"\n"
        );
        std::fs::write(&path, text).unwrap();
        let config =
            Config::load_with_env(Some(&path), Env::prefixed("NOTIFYD_UNIT_UNUSED_")).unwrap();
        config.channels["sms"].policy.clone()
    }

    fn rules(policy: &ChannelPolicy) -> Rules<'_> {
        Rules {
            channel: "sms",
            policy,
            fault_hold: Duration::from_secs(300),
        }
    }

    fn row(attempt: u32, age: Duration) -> Claimed {
        Claimed {
            message: notifyd_channels::Message {
                list_unsubscribe: None,
                id: "n1".into(),
                channel: "sms".into(),
                to: TO.into(),
                subject: None,
                body: Some("hi".into()),
                html: None,
                data: None,
                created_at: clock::system_time(NOW - clock::millis(age)),
            },
            attempt,
            lease: crate::outbox::LeaseToken(i64::from(attempt)),
            expires_at_ms: None,
            tried: Vec::new(),
            validation: crate::outbox::Validation::Done,
            priority: crate::outbox::Priority::Normal,
            deliver_between: None,
            digest_key: None,
            preferences: crate::outbox::ClaimedPreferences::NotRead,
        }
    }

    fn answer(
        policy: &ChannelPolicy,
        row: &Claimed,
        result: Result<Receipt, DeliveryError>,
        next_probe_in: Option<Duration>,
    ) -> Decision {
        let sent = Sent {
            result,
            started_at_ms: NOW - 3,
            latency: Duration::from_millis(3),
            next_probe_in,
        };
        decide(
            &rules(policy),
            row,
            sent,
            NOW,
            &mut StdRng::seed_from_u64(7),
        )
    }

    fn unavailable(
        policy: &ChannelPolicy,
        row: &Claimed,
        next_probe_in: Option<Duration>,
    ) -> Decision {
        let err = DeliveryError::transient("http_503", "unavailable");
        answer(policy, row, Err(err), next_probe_in)
    }

    fn run_at(c: &Completion) -> i64 {
        match c.outcome {
            Outcome::Retry { run_at_ms, .. } => run_at_ms,
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_delivery_records_the_provider_id_and_counts_as_delivered() {
        let p = policy("");
        let receipt = Receipt {
            provider_id: Some("SM123".into()),
        };
        let d = answer(&p, &row(1, Duration::ZERO), Ok(receipt), None);
        assert_eq!(d.kind, DecisionKind::Delivered);
        assert_eq!(d.class, AttemptClass::Delivered);
        assert_eq!(
            d.completion.outcome,
            Outcome::Delivered {
                provider_id: Some("SM123".into())
            }
        );
        let record = d.completion.record.unwrap();
        assert_eq!(
            (
                record.outcome.as_str(),
                record.decision.as_str(),
                record.latency_ms
            ),
            ("delivered", "delivered", 3)
        );
        assert_eq!(d.health.counted, AttemptKind::Delivered);
        assert!(d.health.error.is_none() && d.hold.is_none());
    }

    #[test]
    fn a_failed_probe_waits_for_the_next_probe_and_refunds_its_attempt() {
        let p = policy("retry = { max_attempts = 2 }");
        // The last allowed attempt: without the breaker's word this would be dead.
        let d = unavailable(&p, &row(2, Duration::ZERO), Some(Duration::from_secs(5)));
        assert_eq!(d.kind, DecisionKind::ProbeFailed);
        assert!(matches!(
            d.completion.outcome,
            Outcome::Retry {
                refund_attempt: true,
                ..
            }
        ));
        assert_eq!(
            run_at(&d.completion),
            NOW + 5_000,
            "due at the next probe, not after backoff"
        );
        assert_eq!(d.completion.record.unwrap().decision, "probe_failed");
    }

    #[test]
    fn the_same_failure_outside_a_probe_spends_the_last_attempt() {
        let p = policy("retry = { max_attempts = 2 }");
        let d = unavailable(&p, &row(2, Duration::ZERO), None);
        assert_eq!(
            d.kind,
            DecisionKind::Dead {
                why: Ended::RetriesExhausted
            }
        );
        assert!(matches!(
            d.completion.outcome,
            Outcome::Finish {
                state: State::Dead,
                fallback: true,
                ..
            }
        ));
        assert_eq!(d.health.counted, AttemptKind::Failed);
        assert!(!d.health.dead_critical, "not a critical channel");
    }

    #[test]
    fn a_critical_channels_dead_notification_is_flagged_for_alerting() {
        let p = policy("criticality = \"critical\"\nretry = { max_attempts = 1 }");
        let d = unavailable(&p, &row(1, Duration::ZERO), None);
        assert!(d.health.dead_critical);
    }

    #[test]
    fn a_transient_failure_with_attempts_left_is_retried_after_backoff() {
        let p = policy("retry = { max_attempts = 5, base = \"1s\", max = \"60s\" }");
        let d = unavailable(&p, &row(3, Duration::ZERO), None);
        assert_eq!(d.kind, DecisionKind::Retry);
        let wait = run_at(&d.completion) - NOW;
        assert!(
            (0..=4_000).contains(&wait),
            "full jitter under base · 2²: {wait}"
        );
        assert_eq!(d.retry_in.map(clock::millis), Some(wait));
        assert!(matches!(
            d.completion.outcome,
            Outcome::Retry {
                refund_attempt: false,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_probe_fails_over_when_the_channel_has_a_failover() {
        let p = policy("failover = [\"sms-backup\"]");
        let d = unavailable(&p, &row(1, Duration::ZERO), Some(Duration::from_secs(5)));
        assert!(
            matches!(&d.completion.outcome, Outcome::Reroute { channel, error, .. }
                if channel == "sms-backup" && error.starts_with("breaker open on sms: ")),
            "{:?}",
            d.completion.outcome
        );
        assert_eq!(
            d.completion.record.unwrap().decision,
            "failed_over:sms-backup"
        );
    }

    #[test]
    fn a_failed_probe_past_max_age_ends_so_an_endless_outage_terminates() {
        let p = policy("retry = { max_attempts = 5, max_age = \"1h\" }");
        let d = unavailable(
            &p,
            &row(1, Duration::from_secs(7200)),
            Some(Duration::from_secs(5)),
        );
        assert_eq!(
            d.kind,
            DecisionKind::Dead {
                why: Ended::MaxAgeReached
            }
        );
    }

    #[test]
    fn a_rate_limit_with_retry_after_holds_the_channel_and_refunds_the_attempt() {
        let p = policy("");
        let err = DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(20)),
        };
        let d = answer(&p, &row(1, Duration::ZERO), Err(err), None);
        assert_eq!(d.kind, DecisionKind::RateLimited);
        assert_eq!(
            d.hold,
            Some((Duration::from_secs(20), HoldReason::RetryAfter))
        );
        assert_eq!(run_at(&d.completion), NOW + 20_000);
        assert!(matches!(
            d.completion.outcome,
            Outcome::Retry {
                refund_attempt: true,
                ..
            }
        ));
    }

    #[test]
    fn refused_credentials_hold_the_channel_for_the_fault_hold() {
        let p = policy("");
        let err = DeliveryError::ChannelFault {
            code: "http_401".into(),
            reason: "bad token".into(),
        };
        let d = answer(&p, &row(1, Duration::ZERO), Err(err), None);
        assert_eq!(d.kind, DecisionKind::Held);
        assert_eq!(d.class, AttemptClass::ChannelFault);
        assert_eq!(
            d.hold,
            Some((Duration::from_secs(300), HoldReason::ChannelFault))
        );
        assert_eq!(run_at(&d.completion), NOW + 300_000);
    }

    #[test]
    fn a_rejection_fails_the_notification_and_never_fails_over() {
        let p = policy("failover = [\"sms-backup\"]");
        let err = DeliveryError::invalid_recipient("21211", "not a number");
        let d = answer(&p, &row(1, Duration::ZERO), Err(err), None);
        assert_eq!(d.kind, DecisionKind::Failed);
        assert!(matches!(
            d.completion.outcome,
            Outcome::Finish {
                state: State::Failed,
                ..
            }
        ));
    }

    #[test]
    fn the_recipient_quoted_by_a_provider_is_masked_in_the_channel_health() {
        let p = policy("");
        let reason = format!("21211: The 'To' number {TO} is not a valid phone number.");
        let err = DeliveryError::invalid_recipient("21211", reason);
        let d = answer(&p, &row(1, Duration::ZERO), Err(err), None);
        let shown = d.health.error.unwrap().message;
        assert!(!shown.contains(TO), "{shown}");
        assert!(shown.contains("+155***67"), "{shown}");
        // The attempt row, behind the API's own access control, keeps what the provider said.
        assert!(d.completion.record.unwrap().error.unwrap().contains(TO));
    }

    #[test]
    fn a_recipient_over_its_limit_is_due_at_its_next_token_and_recorded_as_not_sent() {
        let now = clock::now();
        let why = Unsent::RecipientLimited {
            next: now + Duration::from_secs(9),
        };
        let c = unsent(&row(1, Duration::ZERO), why, NOW, now);
        assert_eq!(run_at(&c), NOW + 9_000);
        let record = c.record.unwrap();
        assert_eq!(
            (record.outcome.as_str(), record.decision.as_str()),
            ("not_sent", "waited_for_rate_limit")
        );
    }

    #[test]
    fn a_row_without_a_shared_channel_token_in_time_is_due_at_the_next_token_unrecorded() {
        let now = clock::now();
        let why = Unsent::ChannelLimited {
            next: now + Duration::from_millis(1500),
        };
        let c = unsent(&row(1, Duration::ZERO), why, NOW, now);
        assert_eq!(run_at(&c), NOW + 1_500);
        assert!(matches!(
            c.outcome,
            Outcome::Retry {
                refund_attempt: true,
                ..
            }
        ));
        assert!(c.record.is_none(), "no attempt was made");
    }

    #[test]
    fn rows_not_sent_for_the_gates_reasons_are_released_unrecorded() {
        for why in [
            Unsent::Stopping,
            Unsent::WaitedTooLongForASlot,
            Unsent::ChannelHeld,
            Unsent::BreakerOpened,
            Unsent::LimitUnreadable,
        ] {
            let c = unsent(&row(1, Duration::ZERO), why, NOW, clock::now());
            assert_eq!((c.outcome, c.record), (Outcome::Release, None), "{why:?}");
        }
        let c = unsent(&row(1, Duration::ZERO), Unsent::Expired, NOW, clock::now());
        assert!(matches!(
            c.outcome,
            Outcome::Finish {
                state: State::Expired,
                fallback: false,
                ..
            }
        ));
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
