//! What a completion does to its row, decided without the store.
//!
//! A backend turns a [`Completion`] into a [`CompletionPlan`] and persists it: the row change,
//! fenced by the completion's [`LeaseToken`], then — only if that change landed — the follow-up.

/// A leased row's next state: the queue's vocabulary (the digest rule reads it too).
pub(crate) use crate::model::RowChange;
use crate::model::{Outcome, State};

/// The next state of a leased row and what must happen after it is written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CompletionPlan {
    pub change: RowChange,
    /// Runs only when the fenced change landed (the lease was still this completion's).
    pub then: Option<FollowUp>,
}

/// Which changes move an escalation chain on: a rule of the queue's, so written beside the plan
/// rather than in the vocabulary the rules import.
impl RowChange {
    /// Whether this change triggers a notification's next escalation step, and how: a delivery
    /// starts the wait for an acknowledgement; a final failure means nobody can acknowledge, so
    /// the step is due at once. Retries and moves keep the notification alive: no step yet.
    pub(crate) fn escalation_trigger(&self) -> Option<crate::rules::escalation::StepTrigger> {
        use crate::rules::escalation::StepTrigger;
        match self {
            RowChange::Deliver { .. } => Some(StepTrigger::Delivered),
            RowChange::End { .. } => Some(StepTrigger::Undelivered),
            RowChange::Requeue { .. } | RowChange::Move { .. } => None,
        }
    }
}

/// Work that follows a row change that landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FollowUp {
    /// Receipts that arrived before this provider id was recorded are applied now.
    AttachEarlyReceipts { provider_id: String },
    /// The notification's next fallback route is queued as a child
    /// ([`super::fallback::fallback_child`]).
    QueueFallback,
}

/// A completion no backend may write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidCompletion {
    #[error("a completion cannot end a notification as {0}: only failed, dead or expired")]
    NotAnEndState(State),
}

/// The states a completion may end a notification in.
pub(crate) const END_STATES: [State; 3] = [State::Failed, State::Dead, State::Expired];

/// The plan for an attempt's `outcome`, at `now_ms`.
pub(crate) fn plan(outcome: Outcome, now_ms: i64) -> Result<CompletionPlan, InvalidCompletion> {
    Ok(match outcome {
        Outcome::Delivered { provider_id } => CompletionPlan {
            then: provider_id
                .clone()
                .map(|provider_id| FollowUp::AttachEarlyReceipts { provider_id }),
            change: RowChange::Deliver { provider_id },
        },
        Outcome::Retry {
            run_at_ms,
            refund_attempt,
            code,
            error,
        } => CompletionPlan {
            change: RowChange::Requeue {
                run_at_ms,
                refund: refund_attempt,
                last: Some((code, error)),
            },
            then: None,
        },
        Outcome::Release => CompletionPlan {
            change: RowChange::Requeue {
                run_at_ms: now_ms,
                refund: true,
                last: None,
            },
            then: None,
        },
        Outcome::Finish {
            state,
            code,
            error,
            fallback,
        } => {
            if !END_STATES.contains(&state) {
                return Err(InvalidCompletion::NotAnEndState(state));
            }
            CompletionPlan {
                change: RowChange::End { state, code, error },
                then: fallback.then_some(FollowUp::QueueFallback),
            }
        }
        Outcome::Reroute {
            channel,
            code,
            error,
        } => CompletionPlan {
            change: RowChange::Move {
                channel: channel.into(),
                run_at_ms: now_ms,
                code,
                error,
            },
            then: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    #[test]
    fn a_delivery_with_a_provider_id_attaches_early_receipts() {
        let p = plan(
            Outcome::Delivered {
                provider_id: Some("SM1".into()),
            },
            NOW,
        )
        .unwrap();
        assert_eq!(
            p.change,
            RowChange::Deliver {
                provider_id: Some("SM1".into())
            }
        );
        assert_eq!(
            p.then,
            Some(FollowUp::AttachEarlyReceipts {
                provider_id: "SM1".into()
            })
        );
    }

    #[test]
    fn a_delivery_without_a_provider_id_has_nothing_to_attach() {
        let p = plan(Outcome::Delivered { provider_id: None }, NOW).unwrap();
        assert_eq!(p.then, None);
    }

    #[test]
    fn a_retry_requeues_at_its_time_with_its_error() {
        let p = plan(
            Outcome::Retry {
                run_at_ms: NOW + 5_000,
                refund_attempt: false,
                code: "timeout".into(),
                error: "no answer".into(),
            },
            NOW,
        )
        .unwrap();
        assert_eq!(
            p.change,
            RowChange::Requeue {
                run_at_ms: NOW + 5_000,
                refund: false,
                last: Some(("timeout".into(), "no answer".into())),
            }
        );
        assert_eq!(p.then, None);
    }

    #[test]
    fn a_release_is_due_now_refunded_and_keeps_the_last_error() {
        let p = plan(Outcome::Release, NOW).unwrap();
        assert_eq!(
            p.change,
            RowChange::Requeue {
                run_at_ms: NOW,
                refund: true,
                last: None,
            }
        );
    }

    #[test]
    fn a_finish_queues_the_fallback_only_when_asked() {
        let finish = |fallback| Outcome::Finish {
            state: State::Failed,
            code: "invalid_recipient".into(),
            error: "no such number".into(),
            fallback,
        };
        assert_eq!(
            plan(finish(true), NOW).unwrap().then,
            Some(FollowUp::QueueFallback)
        );
        assert_eq!(plan(finish(false), NOW).unwrap().then, None);
    }

    #[test]
    fn a_finish_into_a_live_or_caller_state_is_refused() {
        for state in [
            State::Queued,
            State::Sending,
            State::Delivered,
            State::Cancelled,
        ] {
            let outcome = Outcome::Finish {
                state,
                code: "x".into(),
                error: "x".into(),
                fallback: false,
            };
            assert_eq!(
                plan(outcome, NOW),
                Err(InvalidCompletion::NotAnEndState(state))
            );
        }
    }

    #[test]
    fn a_delivery_starts_the_escalation_wait_and_an_end_escalates_at_once() {
        use crate::rules::escalation::StepTrigger;
        let deliver = plan(Outcome::Delivered { provider_id: None }, NOW).unwrap();
        assert_eq!(
            deliver.change.escalation_trigger(),
            Some(StepTrigger::Delivered)
        );
        let end = plan(
            Outcome::Finish {
                state: State::Dead,
                code: "x".into(),
                error: "x".into(),
                fallback: false,
            },
            NOW,
        )
        .unwrap();
        assert_eq!(
            end.change.escalation_trigger(),
            Some(StepTrigger::Undelivered)
        );
        assert_eq!(
            plan(Outcome::Release, NOW)
                .unwrap()
                .change
                .escalation_trigger(),
            None
        );
    }

    #[test]
    fn a_reroute_moves_the_row_due_now() {
        let p = plan(
            Outcome::Reroute {
                channel: "sms-backup".into(),
                code: "timeout".into(),
                error: "no answer".into(),
            },
            NOW,
        )
        .unwrap();
        assert_eq!(
            p.change,
            RowChange::Move {
                channel: "sms-backup".into(),
                run_at_ms: NOW,
                code: "timeout".into(),
                error: "no answer".into(),
            }
        );
    }
}
