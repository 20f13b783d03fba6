//! Escalation: if nobody acknowledges a notification within `after` of its delivery, the next
//! step (another channel, another person) is sent. Pure: the store persists what these decide.
//!
//! The chain is durable queue state: when a notification with steps left is delivered, its next
//! step is queued at once as a linked notification due `after` later (its `run_at` is the
//! timer, so a restart or another daemon sends it on time). An acknowledgement marks the chain's
//! first notification and cancels the step waiting in the queue in the same write; a step is
//! queued only if its chain is not acknowledged, read in the write that queues it.

use crate::model::{
    AckSource, Content, Escalation, EscalationStep, NewNotification, NotificationId, Priority,
    Rule, RuleEvent,
};

/// Most steps one notification may carry (as many as fallback routes, for the same reason: each
/// step stores the steps after it).
pub(crate) const MAX_STEPS: usize = 8;
/// Longest wait before a step: 30 days.
pub(crate) const MAX_AFTER_MS: i64 = 30 * 24 * 60 * 60 * 1000;
/// How long an acknowledgement link keeps working after the last step could be due.
pub(crate) const ACK_LINK_GRACE_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The `last_code` of a step the acknowledgement cancelled.
pub(crate) const ACKNOWLEDGED_CODE: &str = "acknowledged";
/// Its `last_error`.
pub(crate) const ACKNOWLEDGED_MESSAGE: &str = "not sent: the escalation was acknowledged";

/// What the next step needs of the notification before it, as read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepParent {
    pub id: String,
    /// The chain's first notification: the parent itself when it is that one.
    pub root: String,
    /// Its steps still to come, in order.
    pub steps: Vec<EscalationStep>,
    /// The chain's first notification's content, sent by a step that carries none of its own
    /// (a step's own content is for its channel's kind, not for the steps after it).
    pub content: Content,
    pub priority: Priority,
    pub expires_at_ms: Option<i64>,
}

/// How the notification before the step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepTrigger {
    /// Delivered: the step waits `after` for an acknowledgement.
    Delivered,
    /// Failed, dead or expired: nobody got it, so nobody can acknowledge it; the step is due now.
    Undelivered,
}

/// The idempotency key of a notification's next step: it queues at most one, however often the
/// completion that triggers it is written.
pub(crate) fn step_key(parent_id: &str) -> String {
    format!("escalate:{parent_id}")
}

/// The next step after `parent`, carrying the rest, or `None` when the chain was acknowledged or
/// no step is left. After a delivery it is due `after` later; after a failure, now. It keeps the
/// parent's priority and expiry, and is created now (it is a new message, not a retry).
pub(crate) fn next_step(
    parent: StepParent,
    acknowledged: bool,
    trigger: StepTrigger,
    child_id: NotificationId,
    now_ms: i64,
) -> Option<NewNotification> {
    if acknowledged {
        return None;
    }
    let mut steps = parent.steps.into_iter();
    let next = steps.next()?;
    let run_at_ms = match trigger {
        StepTrigger::Delivered => now_ms.saturating_add(next.after_ms.clamp(0, MAX_AFTER_MS)),
        StepTrigger::Undelivered => now_ms,
    };
    let content = next.content.unwrap_or(parent.content);
    Some(NewNotification {
        id: child_id,
        channel: next.target.channel,
        to: next.target.to,
        subject: content.subject,
        body: content.body,
        html: content.html,
        data: content.data,
        priority: parent.priority,
        run_at_ms,
        expires_at_ms: parent.expires_at_ms,
        created_at_ms: now_ms,
        idempotency_key: Some(step_key(&parent.id)),
        // Matches no submission: only the parent's completion may queue it.
        content_hash: String::new(),
        fallback: Vec::new(),
        source: None,
        // A step goes when it is due: its recipient's own quiet hours still apply when sent.
        deliver_between: None,
        // Each step is its own message to its own recipient, never merged or collected.
        dedup: None,
        digest: None,
        escalation: Escalation {
            steps: steps.collect(),
            root: Some(parent.root.into()),
        },
    })
}

/// The timeline lines for a step queued after `parent`: on the chain's first notification (whose
/// timeline shows the whole chain) and on the parent when that is another one.
pub(crate) fn step_events(
    parent: &str,
    step: &NewNotification,
    trigger: StepTrigger,
    now_ms: i64,
) -> Vec<RuleEvent> {
    let root = step.escalation.root.as_deref().unwrap_or(parent);
    let when = match trigger {
        StepTrigger::Delivered => format!(
            "due in {} s unless acknowledged",
            (step.run_at_ms - now_ms).max(0) / 1000
        ),
        StepTrigger::Undelivered => format!("due now: {parent} was not delivered"),
    };
    let detail = format!(
        "step {} queued after {parent}: channel {}, {when}",
        step.id, step.channel
    );
    let mut on = vec![root];
    if parent != root {
        on.push(parent);
    }
    on.into_iter()
        .map(|notification| RuleEvent {
            notification: notification.into(),
            at_ms: now_ms,
            rule: Rule::Escalation,
            detail: detail.clone(),
        })
        .collect()
}

/// The timeline line for an acknowledgement, on the chain's first notification.
pub(crate) fn ack_event(root: &str, source: AckSource, cancelled: u64, now_ms: i64) -> RuleEvent {
    let steps = match cancelled {
        0 => "no step was waiting".to_owned(),
        1 => "1 waiting step cancelled".to_owned(),
        n => format!("{n} waiting steps cancelled"),
    };
    RuleEvent {
        notification: root.into(),
        at_ms: now_ms,
        rule: Rule::Ack,
        detail: format!("acknowledged by {}; {steps}", source.as_str()),
    }
}

/// Whether a provider's receipt acknowledges the message it is about: only `read` (WhatsApp
/// through Twilio, or a relay's signed JSON receipt) says a person saw it. `delivered` says
/// only that a device got it.
pub(crate) fn receipt_acknowledges(provider_status: &str) -> bool {
    provider_status.eq_ignore_ascii_case("read")
}

/// What the store read of the notification an acknowledgement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckTarget {
    /// The chain's first notification (the notification itself outside a chain).
    pub root: String,
    /// Whether it carries steps or is one: only then is there anything to acknowledge.
    pub escalates: bool,
    /// When the chain was acknowledged, if it was.
    pub acked_at_ms: Option<i64>,
}

/// What acknowledging does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AckPlan {
    /// Mark `root` acknowledged and cancel the chain's waiting steps.
    Mark { root: String },
    /// Already acknowledged: nothing changes (an acknowledgement is idempotent).
    Already { root: String, at_ms: i64 },
    /// Not an escalating notification.
    NothingToAck,
    /// No such notification.
    NotFound,
}

/// The plan for acknowledging the notification `target` describes (`None`: unknown id).
pub(crate) fn plan_ack(target: Option<AckTarget>) -> AckPlan {
    match target {
        None => AckPlan::NotFound,
        Some(AckTarget {
            root,
            acked_at_ms: Some(at_ms),
            ..
        }) => AckPlan::Already { root, at_ms },
        Some(AckTarget {
            escalates: false, ..
        }) => AckPlan::NothingToAck,
        Some(AckTarget { root, .. }) => AckPlan::Mark { root },
    }
}

/// Until when an acknowledgement link works: past the latest time the last step could be due
/// (`run_at_ms` plus every step's wait, `waits_ms`), by [`ACK_LINK_GRACE_MS`]; never past the
/// notification's expiry plus that grace.
pub(crate) fn ack_link_expiry(run_at_ms: i64, waits_ms: &[i64], expires_at_ms: Option<i64>) -> i64 {
    let waits: i64 = waits_ms
        .iter()
        .map(|w| (*w).clamp(0, MAX_AFTER_MS))
        .fold(0, i64::saturating_add);
    let latest = run_at_ms.saturating_add(waits);
    let latest = expires_at_ms.map_or(latest, |e| latest.min(e));
    latest.saturating_add(ACK_LINK_GRACE_MS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::FallbackTarget;

    const NOW: i64 = 1_700_000_000_000;
    const MINUTE: i64 = 60_000;

    fn step(after_ms: i64, channel: &str, to: &str) -> EscalationStep {
        EscalationStep {
            after_ms,
            target: FallbackTarget {
                channel: channel.into(),
                to: to.into(),
            },
            content: None,
        }
    }

    fn parent(steps: Vec<EscalationStep>) -> StepParent {
        StepParent {
            id: "p1".into(),
            root: "r1".into(),
            steps,
            content: Content {
                subject: Some("Disk full".into()),
                body: Some("db1 is at 99%".into()),
                html: None,
                data: None,
            },
            priority: Priority::High,
            expires_at_ms: Some(NOW + 60 * MINUTE),
        }
    }

    #[test]
    fn after_a_delivery_the_next_step_waits_its_after() {
        let s = next_step(
            parent(vec![step(5 * MINUTE, "sms", "+15550001")]),
            false,
            StepTrigger::Delivered,
            "c1".into(),
            NOW,
        )
        .unwrap();
        assert_eq!(s.run_at_ms, NOW + 5 * MINUTE);
        assert_eq!((s.channel.as_str(), s.to.as_str()), ("sms", "+15550001"));
        assert_eq!(s.idempotency_key.as_deref(), Some("escalate:p1"));
        assert_eq!(s.escalation.root.as_deref(), Some("r1"));
        assert_eq!(s.priority, Priority::High);
        assert_eq!(s.expires_at_ms, Some(NOW + 60 * MINUTE));
        assert_eq!(s.body.as_deref(), Some("db1 is at 99%"));
    }

    #[test]
    fn the_step_carries_the_steps_after_it() {
        let s = next_step(
            parent(vec![
                step(MINUTE, "sms", "+1"),
                step(2 * MINUTE, "email", "boss@example.com"),
            ]),
            false,
            StepTrigger::Delivered,
            "c1".into(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            s.escalation.steps,
            vec![step(2 * MINUTE, "email", "boss@example.com")]
        );
    }

    #[test]
    fn after_a_failure_the_next_step_is_due_now() {
        let s = next_step(
            parent(vec![step(5 * MINUTE, "sms", "+1")]),
            false,
            StepTrigger::Undelivered,
            "c1".into(),
            NOW,
        )
        .unwrap();
        assert_eq!(s.run_at_ms, NOW);
    }

    #[test]
    fn an_acknowledged_chain_queues_no_step() {
        let next = next_step(
            parent(vec![step(MINUTE, "sms", "+1")]),
            true,
            StepTrigger::Delivered,
            "c1".into(),
            NOW,
        );
        assert_eq!(next, None);
    }

    #[test]
    fn no_step_left_means_no_step() {
        let next = next_step(
            parent(Vec::new()),
            false,
            StepTrigger::Delivered,
            "c".into(),
            NOW,
        );
        assert_eq!(next, None);
    }

    #[test]
    fn content_rendered_for_the_step_wins_over_the_parents() {
        let mut s = step(MINUTE, "sms", "+1");
        s.content = Some(Content {
            subject: None,
            body: Some("sms text".into()),
            html: None,
            data: None,
        });
        let next = next_step(
            parent(vec![s]),
            false,
            StepTrigger::Delivered,
            "c".into(),
            NOW,
        )
        .unwrap();
        assert_eq!(
            (next.subject, next.body.as_deref()),
            (None, Some("sms text"))
        );
    }

    fn target(escalates: bool, acked_at_ms: Option<i64>) -> AckTarget {
        AckTarget {
            root: "r1".into(),
            escalates,
            acked_at_ms,
        }
    }

    #[test]
    fn acknowledging_an_escalating_notification_marks_its_chain() {
        assert_eq!(
            plan_ack(Some(target(true, None))),
            AckPlan::Mark { root: "r1".into() }
        );
    }

    #[test]
    fn a_second_acknowledgement_changes_nothing_and_says_when_the_first_was() {
        assert_eq!(
            plan_ack(Some(target(true, Some(NOW)))),
            AckPlan::Already {
                root: "r1".into(),
                at_ms: NOW
            }
        );
    }

    #[test]
    fn a_notification_without_escalation_has_nothing_to_acknowledge() {
        assert_eq!(plan_ack(Some(target(false, None))), AckPlan::NothingToAck);
        assert_eq!(plan_ack(None), AckPlan::NotFound);
    }

    #[test]
    fn only_a_read_receipt_acknowledges() {
        assert!(receipt_acknowledges("read"));
        assert!(receipt_acknowledges("READ"));
        assert!(!receipt_acknowledges("delivered"));
        assert!(!receipt_acknowledges("undelivered"));
    }

    #[test]
    fn an_ack_link_outlives_the_last_step_by_the_grace() {
        let steps = [5 * MINUTE, 10 * MINUTE];
        assert_eq!(
            ack_link_expiry(NOW, &steps, None),
            NOW + 15 * MINUTE + ACK_LINK_GRACE_MS
        );
        assert_eq!(
            ack_link_expiry(NOW, &steps, Some(NOW + MINUTE)),
            NOW + MINUTE + ACK_LINK_GRACE_MS
        );
    }

    #[test]
    fn the_timeline_says_how_it_was_acknowledged_and_what_stopped() {
        let e = ack_event("r1", AckSource::Link, 1, NOW);
        assert_eq!((e.notification.as_str(), e.rule), ("r1", Rule::Ack));
        assert_eq!(e.detail, "acknowledged by link; 1 waiting step cancelled");
        assert_eq!(
            ack_event("r1", AckSource::Api, 0, NOW).detail,
            "acknowledged by api; no step was waiting"
        );
    }

    #[test]
    fn a_step_is_on_the_chains_timeline_and_on_the_notification_before_it() {
        let mut p = parent(vec![
            step(5 * MINUTE, "sms", "+1"),
            step(MINUTE, "sms", "+2"),
        ]);
        let first = next_step(p.clone(), false, StepTrigger::Delivered, "c1".into(), NOW).unwrap();
        let events = step_events("p1", &first, StepTrigger::Delivered, NOW);
        let on: Vec<&str> = events.iter().map(|e| e.notification.as_str()).collect();
        assert_eq!(on, vec!["r1", "p1"]);
        assert_eq!(events[0].rule, Rule::Escalation);
        assert_eq!(
            events[0].detail,
            "step c1 queued after p1: channel sms, due in 300 s unless acknowledged"
        );
        // The chain's first notification itself: one line.
        p.id = "r1".into();
        let first = next_step(p, false, StepTrigger::Undelivered, "c1".into(), NOW).unwrap();
        let events = step_events("r1", &first, StepTrigger::Undelivered, NOW);
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].detail,
            "step c1 queued after r1: channel sms, due now: r1 was not delivered"
        );
    }
}
