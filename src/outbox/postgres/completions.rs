//! A batch of completions as the columns of one statement ([`super::sql::COMPLETE`]): the
//! attempts to record, and the fenced row changes the queue model planned
//! ([`completion::plan`]). The rules stay in the model; this only lays their results out as
//! arrays, one per column, as River's `JobSetStateIfRunningMany` does.

use std::collections::{HashMap, HashSet};

use crate::outbox::completion::{self, FollowUp, RowChange};
use crate::outbox::{Completion, LeaseToken, RuleEvent, State};
use crate::rules::escalation::StepTrigger;

/// Which kind of row change a row of the statement is (its `change` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Deliver,
    Requeue,
    /// A requeue that keeps the row's last code and error (a release).
    RequeueKeepingError,
    End,
    Move,
}

impl ChangeKind {
    /// The name the statement's CASEs test.
    fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Deliver => "deliver",
            ChangeKind::Requeue => "requeue",
            ChangeKind::RequeueKeepingError => "requeue_keeping_error",
            ChangeKind::End => "end",
            ChangeKind::Move => "move",
        }
    }
}

/// The fenced row changes of a batch, one array per column.
#[derive(Debug, Default)]
pub(super) struct ChangeColumns {
    pub id: Vec<String>,
    pub lease: Vec<i64>,
    pub change: Vec<&'static str>,
    pub state: Vec<&'static str>,
    /// Set by a delivery only (NULL there clears it).
    pub provider_id: Vec<Option<String>>,
    /// NULL keeps the row's `run_at`.
    pub run_at: Vec<Option<i64>>,
    /// Attempts given back (1 for a refunded attempt).
    pub refund: Vec<i64>,
    pub code: Vec<Option<String>>,
    pub error: Vec<Option<String>>,
    /// The channel a failover moves the row to; NULL keeps it.
    pub channel: Vec<Option<String>>,
}

/// The attempts of a batch, one array per column of `attempts`.
#[derive(Debug, Default)]
pub(super) struct RecordColumns {
    pub id: Vec<String>,
    pub attempt: Vec<i64>,
    pub started_at: Vec<i64>,
    pub latency_ms: Vec<i64>,
    pub outcome: Vec<String>,
    pub code: Vec<Option<String>>,
    pub error: Vec<Option<String>>,
    pub provider_id: Vec<Option<String>>,
    pub decision: Vec<String>,
    pub channel: Vec<String>,
}

/// A batch of completions laid out for [`super::sql::COMPLETE`].
#[derive(Debug, Default)]
pub(super) struct CompletionBatch {
    pub changes: ChangeColumns,
    pub records: RecordColumns,
    /// The leases whose change, once landed, queues the notification's fallback.
    pub fallback_after: HashSet<(String, LeaseToken)>,
    /// The rules' timeline events of each lease, written once its change landed.
    pub events_after: HashMap<(String, LeaseToken), Vec<RuleEvent>>,
    /// The leases whose change, once landed, queues the notification's next escalation step.
    pub escalate_after: HashMap<(String, LeaseToken), StepTrigger>,
    /// Whether any change may be followed by more writes (a fallback child, or early receipts
    /// that fail the notification), which must commit with it.
    pub may_follow_up: bool,
}

impl CompletionBatch {
    /// Plans each completion at `now_ms`. Every attempt is recorded; a completion the model
    /// refuses changes nothing (its row is sent again after its lease; logged), and a second
    /// completion of the same lease in one batch changes nothing, as it would after the first
    /// had landed.
    /// `escalating` are the leases on rows with escalation steps.
    pub(super) fn plan(
        completions: Vec<Completion>,
        now_ms: i64,
        escalating: &HashSet<(String, LeaseToken)>,
    ) -> Self {
        let mut batch = Self::default();
        let mut leases: HashSet<(String, LeaseToken)> = HashSet::new();
        for c in completions {
            if let Some(rec) = c.record {
                let r = &mut batch.records;
                r.id.push(c.id.clone().into());
                r.attempt.push(i64::from(c.attempt));
                r.started_at.push(rec.started_at_ms);
                r.latency_ms.push(rec.latency_ms);
                r.outcome.push(rec.outcome);
                r.code.push(rec.code);
                r.error.push(rec.error);
                r.provider_id.push(rec.provider_id);
                r.decision.push(rec.decision);
                r.channel.push(rec.channel.into());
            }
            let plan = match completion::plan(c.outcome, now_ms) {
                Ok(plan) => plan,
                Err(e) => {
                    tracing::error!(notification_id = %c.id, error = %e,
                        "Completion refused; the notification will be retried when its lease expires.");
                    continue;
                }
            };
            if !leases.insert((c.id.clone().into(), c.lease)) {
                tracing::warn!(notification_id = %c.id, lease = c.lease.0,
                    "Completion ignored: the same lease was completed earlier in this batch.");
                continue;
            }
            if !c.events.is_empty() {
                batch.may_follow_up = true;
                batch
                    .events_after
                    .insert((c.id.clone().into(), c.lease), c.events);
            }
            match &plan.then {
                None => {}
                Some(FollowUp::AttachEarlyReceipts { .. }) => batch.may_follow_up = true,
                Some(FollowUp::QueueFallback) => {
                    batch.may_follow_up = true;
                    batch.fallback_after.insert((c.id.clone().into(), c.lease));
                }
            }
            let key: (String, LeaseToken) = (c.id.clone().into(), c.lease);
            if let (true, Some(trigger)) =
                (escalating.contains(&key), plan.change.escalation_trigger())
            {
                batch.may_follow_up = true;
                batch.escalate_after.insert(key, trigger);
            }
            batch.push_change(c.id.into(), c.lease, plan.change);
        }
        batch
    }

    /// Whether there is nothing to write.
    pub(super) fn is_empty(&self) -> bool {
        self.changes.id.is_empty() && self.records.id.is_empty()
    }

    fn push_change(&mut self, id: String, lease: LeaseToken, change: RowChange) {
        let (kind, state, provider_id, run_at, refund, last, channel) = match change {
            RowChange::Deliver { provider_id } => (
                ChangeKind::Deliver,
                State::Delivered,
                provider_id,
                None,
                false,
                None,
                None,
            ),
            RowChange::Requeue {
                run_at_ms,
                refund,
                last: Some(last),
            } => (
                ChangeKind::Requeue,
                State::Queued,
                None,
                Some(run_at_ms),
                refund,
                Some(last),
                None,
            ),
            RowChange::Requeue {
                run_at_ms,
                refund,
                last: None,
            } => (
                ChangeKind::RequeueKeepingError,
                State::Queued,
                None,
                Some(run_at_ms),
                refund,
                None,
                None,
            ),
            RowChange::End { state, code, error } => (
                ChangeKind::End,
                state,
                None,
                None,
                false,
                Some((code, error)),
                None,
            ),
            RowChange::Move {
                channel,
                run_at_ms,
                code,
                error,
            } => (
                ChangeKind::Move,
                State::Queued,
                None,
                Some(run_at_ms),
                false,
                Some((code, error)),
                Some(channel),
            ),
        };
        let (code, error) = last.unzip();
        let c = &mut self.changes;
        c.id.push(id);
        c.lease.push(lease.0);
        c.change.push(kind.as_str());
        c.state.push(state.as_str());
        c.provider_id.push(provider_id);
        c.run_at.push(run_at);
        c.refund.push(i64::from(refund));
        c.code.push(code);
        c.error.push(error);
        c.channel.push(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{AttemptRecord, Outcome};

    const NOW: i64 = 1_000_000;

    fn completion(id: &str, lease: i64, outcome: Outcome) -> Completion {
        Completion {
            id: id.into(),
            attempt: 1,
            lease: LeaseToken(lease),
            outcome,
            record: None,
            events: Vec::new(),
        }
    }

    #[test]
    fn a_delivery_sets_the_provider_id_and_keeps_run_at() {
        let batch = CompletionBatch::plan(
            vec![completion(
                "a",
                3,
                Outcome::Delivered {
                    provider_id: Some("SM1".into()),
                },
            )],
            NOW,
            &HashSet::new(),
        );
        let c = &batch.changes;
        assert_eq!(c.change, ["deliver"]);
        assert_eq!(c.state, ["delivered"]);
        assert_eq!(c.lease, [3]);
        assert_eq!(c.provider_id, [Some("SM1".to_string())]);
        assert_eq!(c.run_at, [None]);
        assert_eq!(c.code, [None]);
        assert!(batch.may_follow_up, "early receipts may be attached");
    }

    #[test]
    fn a_release_keeps_the_last_error_and_refunds_the_attempt() {
        let batch = CompletionBatch::plan(
            vec![completion("a", 1, Outcome::Release)],
            NOW,
            &HashSet::new(),
        );
        let c = &batch.changes;
        assert_eq!(c.change, ["requeue_keeping_error"]);
        assert_eq!(c.state, ["queued"]);
        assert_eq!(c.run_at, [Some(NOW)]);
        assert_eq!(c.refund, [1]);
        assert!(!batch.may_follow_up);
    }

    #[test]
    fn a_failover_moves_to_its_channel() {
        let batch = CompletionBatch::plan(
            vec![completion(
                "a",
                1,
                Outcome::Reroute {
                    channel: "sms".into(),
                    code: "down".into(),
                    error: "the provider is down".into(),
                },
            )],
            NOW,
            &HashSet::new(),
        );
        let c = &batch.changes;
        assert_eq!(c.change, ["move"]);
        assert_eq!(c.channel, [Some("sms".to_string())]);
        assert_eq!(c.code, [Some("down".to_string())]);
    }

    #[test]
    fn an_end_with_fallback_queues_it_after_landing() {
        let batch = CompletionBatch::plan(
            vec![completion(
                "a",
                1,
                Outcome::Finish {
                    state: State::Failed,
                    code: "invalid_recipient".into(),
                    error: "no such number".into(),
                    fallback: true,
                },
            )],
            NOW,
            &HashSet::new(),
        );
        assert_eq!(batch.changes.state, ["failed"]);
        assert!(
            batch
                .fallback_after
                .contains(&("a".to_string(), LeaseToken(1)))
        );
        assert!(batch.may_follow_up);
    }

    #[test]
    fn a_refused_completion_records_its_attempt_but_changes_nothing() {
        let mut c = completion(
            "a",
            1,
            Outcome::Finish {
                state: State::Queued,
                code: "x".into(),
                error: "y".into(),
                fallback: false,
            },
        );
        c.record = Some(AttemptRecord {
            started_at_ms: NOW,
            latency_ms: 5,
            outcome: "transient".into(),
            code: None,
            error: None,
            provider_id: None,
            decision: "retry".into(),
            channel: "email".into(),
        });
        let batch = CompletionBatch::plan(vec![c], NOW, &HashSet::new());
        assert!(batch.changes.id.is_empty());
        assert_eq!(batch.records.id, ["a"]);
        assert_eq!(batch.records.channel, ["email"]);
        assert!(!batch.is_empty());
    }

    #[test]
    fn the_same_lease_completed_twice_changes_the_row_once() {
        let batch = CompletionBatch::plan(
            vec![
                completion("a", 2, Outcome::Delivered { provider_id: None }),
                completion("a", 2, Outcome::Release),
                completion("a", 3, Outcome::Release),
            ],
            NOW,
            &HashSet::new(),
        );
        assert_eq!(batch.changes.change, ["deliver", "requeue_keeping_error"]);
        assert_eq!(batch.changes.lease, [2, 3]);
    }

    #[test]
    fn a_landed_delivery_of_an_escalating_lease_queues_its_step_in_the_same_transaction() {
        let held: HashSet<(String, LeaseToken)> = [("a".to_owned(), LeaseToken(1))].into();
        let batch = CompletionBatch::plan(
            vec![
                completion("a", 1, Outcome::Delivered { provider_id: None }),
                completion("b", 1, Outcome::Delivered { provider_id: None }),
            ],
            NOW,
            &held,
        );
        assert!(batch.may_follow_up);
        assert_eq!(
            batch.escalate_after,
            [(("a".to_owned(), LeaseToken(1)), StepTrigger::Delivered)].into()
        );
        let plain = CompletionBatch::plan(
            vec![completion("b", 1, Outcome::Delivered { provider_id: None })],
            NOW,
            &HashSet::new(),
        );
        assert!(!plain.may_follow_up);
    }
}
