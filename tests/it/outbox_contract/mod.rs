//! The `Outbox` contract: one behaviour per test, written once against the trait, run against
//! every backend.
//!
//! A backend joins by writing a factory that opens a fresh, empty store reading its time from
//! the given [`ManualClock`], and invoking [`outbox_contract!`] with it (see `sqlite.rs`). The
//! behaviours talk only to [`Outbox`] and move the clock instead of sleeping.

use std::time::Duration;

use notifyd::outbox::{
    Claimed, Completion, Enqueued, ManualClock, NewNotification, NotificationId, Outbox, Outcome,
    Priority, State,
};

mod claim;
mod dedup;
mod digest;
mod enqueue;
mod escalation;
mod events;
mod fencing;
mod history;
mod lifecycle;
mod pgbouncer;
mod postgres;
mod receipts;
mod recipients;
mod routes;
mod sqlite;
mod sweep;

/// Where every suite clock starts: 2023-11-14, a real time, so rows look like real rows.
pub const START_MS: i64 = 1_700_000_000_000;
/// The lease the behaviours claim with.
pub const LEASE: Duration = Duration::from_secs(60);

/// A fresh outbox under test and the clock it reads.
pub struct Subject {
    pub outbox: Box<dyn Outbox>,
    pub clock: ManualClock,
    /// Whatever keeps the store alive (a temp dir, a schema to drop).
    pub _storage: Box<dyn std::any::Any + Send>,
}

impl Subject {
    /// What the store reads as now.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A plain notification for `channel`, due now.
    pub fn note(&self, channel: &str) -> NewNotification {
        NewNotification {
            id: uuid::Uuid::now_v7().to_string().into(),
            channel: channel.into(),
            to: "ops@example.com".into(),
            subject: Some("Subject".into()),
            body: Some("Body".into()),
            html: None,
            data: None,
            priority: Priority::Normal,
            run_at_ms: self.now(),
            expires_at_ms: None,
            created_at_ms: self.now(),
            idempotency_key: None,
            content_hash: "h1".into(),
            fallback: Vec::new(),
            source: None,
            deliver_between: None,
            dedup: None,
            digest: None,
            escalation: Default::default(),
        }
    }

    /// Enqueues `n`, which must be new; its id.
    pub async fn put(&self, n: NewNotification) -> NotificationId {
        match self.outbox.enqueue(vec![n]).await.unwrap().remove(0) {
            Enqueued::Created { id } => id,
            other => panic!("expected created, got {other:?}"),
        }
    }

    /// Claims up to `limit` rows of `channel` with the suite's lease.
    pub async fn claim(&self, channel: &str, limit: usize) -> Vec<Claimed> {
        self.outbox
            .claim(&channel.into(), limit, LEASE)
            .await
            .unwrap()
    }

    /// Claims the one due row of `channel`, which must be `id`.
    pub async fn claim_only(&self, channel: &str, id: &str) -> Claimed {
        let mut claimed = self.claim(channel, 10).await;
        assert_eq!(ids(&claimed), vec![id.to_owned()]);
        claimed.remove(0)
    }

    /// Writes `outcome` for the lease `row` was claimed with.
    pub async fn complete(&self, row: &Claimed, outcome: Outcome) {
        self.outbox
            .complete(vec![completion(row, outcome)])
            .await
            .unwrap();
    }

    /// The notification's state.
    pub async fn state(&self, id: &str) -> State {
        self.outbox.get(&id.into()).await.unwrap().unwrap().state
    }
}

/// The completion of `row`'s attempt, without attempt history.
pub fn completion(row: &Claimed, outcome: Outcome) -> Completion {
    Completion {
        events: Vec::new(),
        id: row.message.id.clone().into(),
        attempt: row.attempt,
        lease: row.lease,
        outcome,
        record: None,
    }
}

/// The ids of claimed rows, in claim order.
pub fn ids(claimed: &[Claimed]) -> Vec<String> {
    claimed.iter().map(|c| c.message.id.clone()).collect()
}

/// A final failure.
pub fn finish(state: State, fallback: bool) -> Outcome {
    Outcome::Finish {
        state,
        code: "http_503".into(),
        error: "down".into(),
        fallback,
    }
}

/// Delivered with this provider id.
pub fn delivered(provider_id: &str) -> Outcome {
    Outcome::Delivered {
        provider_id: Some(provider_id.into()),
    }
}

/// Defines one `#[tokio::test]` per behaviour of the contract, each on a fresh subject from
/// `$open` (an `async fn() -> Option<Subject>`: `None` when the backend's server is missing on
/// a developer machine, which the factory has said; under CI the factory fails instead).
macro_rules! outbox_contract {
    ($open:path) => {
        outbox_contract!(@each $open;
            enqueue::a_new_notification_is_stored_queued_as_submitted,
            enqueue::the_same_key_with_the_same_content_returns_the_original,
            enqueue::the_same_key_with_other_content_is_a_conflict_naming_the_holder,
            enqueue::a_key_is_found_with_its_holder_and_an_unused_key_is_not,
            enqueue::one_enqueue_of_several_answers_each_in_order,
            enqueue::the_source_of_an_ingested_notification_is_read_back,
            dedup::a_second_notification_with_the_key_inside_the_window_is_merged_into_the_first,
            dedup::a_dedup_key_is_scoped_to_its_channel_and_recipient,
            dedup::once_the_window_is_over_the_next_notification_takes_the_key,
            dedup::each_item_of_one_enqueue_is_deduplicated_on_its_own,
            dedup::a_replayed_idempotency_key_is_a_replay_not_a_duplicate,
            dedup::a_duplicate_of_a_delivered_notification_reports_its_state,
            dedup::a_key_whose_holder_was_purged_is_taken_by_the_next,
            digest::items_with_one_key_join_one_digest_sent_when_its_window_ends,
            digest::a_digest_is_scoped_to_its_recipient_and_key,
            digest::a_digest_that_fills_up_is_sent_at_once,
            digest::an_item_after_the_digest_was_claimed_opens_the_next,
            digest::a_delivered_digest_delivers_its_items_with_its_provider_id,
            digest::a_failed_digest_fails_its_items_with_its_reason,
            digest::a_retried_digest_keeps_its_items_waiting_and_is_claimed_again,
            digest::a_digest_whose_lease_expired_is_claimed_once_more_never_twice_at_once,
            digest::cancelling_a_digest_fails_its_waiting_items,
            events::rule_events_are_shown_with_their_notification_oldest_first,
            events::retention_purges_a_notifications_events_with_it,
            history::the_history_pages_newest_first_without_repeats_or_gaps,
            history::the_history_filters_by_recipient_state_and_channel,
            history::the_content_of_a_notification_is_read_back,
            history::the_subject_text_is_literal_and_case_insensitive_for_ascii,
            history::the_history_filters_by_priority_creation_time_and_parent,
            history::a_rare_text_is_found_a_bounded_walk_at_a_time,
            history::the_history_filters_by_update_time,
            history::the_history_finds_the_fallbacks_of_a_notification,
            claim::a_claim_takes_high_priority_first_then_earliest_due,
            claim::a_claim_of_several_takes_the_first_in_that_order_highest_priority_first,
            claim::a_claim_takes_only_its_channel_and_at_most_its_limit,
            claim::a_claim_counts_the_attempt_and_carries_the_message,
            claim::a_scheduled_notification_is_claimed_only_once_due,
            claim::a_leased_notification_is_not_claimed_again_while_its_lease_runs,
            claim::an_expired_lease_is_claimed_again_with_the_next_attempt_and_a_higher_token,
            fencing::a_completion_from_a_lost_lease_changes_nothing,
            fencing::a_stale_completion_after_a_replay_is_refused,
            fencing::a_stale_completion_after_a_refunded_attempt_is_refused,
            fencing::a_stale_completion_after_a_failover_is_refused,
            fencing::a_stale_completion_of_an_escalating_notification_queues_no_step,
            fencing::a_stale_completion_of_a_digest_ends_none_of_its_items,
            lifecycle::a_delivery_records_the_provider_id_and_clears_the_last_error,
            lifecycle::a_retry_waits_for_its_time_and_a_refund_keeps_the_attempt_count,
            lifecycle::a_release_puts_it_back_due_now_without_spending_the_attempt,
            lifecycle::attempts_are_recorded_in_order_with_their_channel,
            lifecycle::cancel_ends_a_queued_notification,
            lifecycle::cancel_is_refused_once_leased_and_an_unknown_id_is_not_found,
            lifecycle::a_dead_letter_is_listed_and_replay_requeues_it_with_a_fresh_budget,
            lifecycle::replaying_a_channel_requeues_each_of_its_dead_letters_and_no_other,
            lifecycle::replay_is_refused_for_a_notification_that_is_not_dead,
            lifecycle::depth_counts_live_and_dead_notifications_per_channel,
            routes::a_failure_with_a_fallback_queues_the_next_route_as_a_child,
            routes::a_failure_without_the_fallback_flag_queues_nothing,
            routes::a_failover_moves_the_notification_in_place_with_a_fresh_budget,
            routes::an_open_breaker_defers_due_rows_to_the_next_probe,
            routes::an_open_breaker_fails_over_due_rows_that_have_not_tried_the_target,
            receipts::a_late_receipt_is_attached_and_a_failure_fails_the_notification,
            receipts::an_early_receipt_is_applied_when_the_provider_id_is_recorded,
            receipts::a_replayed_receipt_is_stored_once,
            receipts::a_receipt_never_matches_a_notification_of_another_channel,
            sweep::the_sweep_expires_queued_notifications_whose_expiry_passed,
            sweep::the_sweep_dead_letters_an_unknown_channel_but_not_its_live_leases,
            sweep::retention_purges_old_finished_notifications_and_keeps_dead_and_live_ones,
            sweep::retention_purges_unmatched_receipts_once_old,
            sweep::the_oldest_due_time_ignores_scheduled_notifications,
            recipients::preferences_are_stored_replaced_and_read_back_by_address,
            recipients::deleted_preferences_are_gone_and_a_second_delete_finds_nothing,
            recipients::an_opt_out_adds_the_channel_once_and_keeps_the_rest,
            recipients::an_opt_out_of_an_unknown_recipient_creates_its_preferences,
            recipients::a_claimed_notification_carries_its_priority_and_delivery_window,
            recipients::a_held_notification_waits_unspent_with_its_event_and_a_lost_lease_writes_none,
            escalation::a_delivered_notification_queues_its_next_step_due_after_its_wait,
            escalation::an_undelivered_notification_escalates_at_once,
            escalation::an_acknowledgement_cancels_the_waiting_step_and_stops_the_chain,
            escalation::acknowledging_again_changes_nothing_and_names_the_first_time,
            escalation::acknowledging_a_step_acknowledges_its_chain,
            escalation::no_step_is_queued_after_an_acknowledgement,
            escalation::a_step_claimed_before_the_acknowledgement_is_sent_but_queues_no_more,
            escalation::a_retry_does_not_start_the_escalation,
            escalation::only_an_escalating_notification_can_be_acknowledged,
        );
    };
    (@each $open:path; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(subject) = $open().await else { return };
                $crate::outbox_contract::$module::$name(subject).await;
            }
        )*
    };
}
pub(crate) use outbox_contract;
