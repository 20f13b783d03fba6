//! What the maintenance sweep may do: expire overdue rows, end rows of channels that are gone,
//! and delete what retention no longer keeps. Backends run these rules in bounded batches.

use crate::model::Retention;
#[cfg(test)]
use crate::model::State;

/// Rows the expiry sweep ends in one batch at most; the next sweep takes the rest.
pub(crate) const EXPIRE_BATCH: usize = 1000;
/// Rows of one unknown channel dead-lettered in one batch at most.
pub(crate) const ORPHAN_BATCH: usize = 1000;
/// Rows of each kind one retention batch deletes at most.
pub(crate) const PURGE_BATCH: usize = 500;
/// Retention batches one sweep runs at most: with 500 rows a batch and the default 5 s sweep,
/// up to 10 000 finished rows/s, more than a daemon delivers; the next sweep takes the rest.
pub(crate) const PURGE_BATCHES_PER_SWEEP: usize = 100;

/// Whether retention goes on with another batch in this sweep: the last one came back full.
pub(crate) fn purge_again(notifications: u64, receipts: u64) -> bool {
    notifications >= PURGE_BATCH as u64 || receipts >= PURGE_BATCH as u64
}

/// Whether the sweep expires a row: still `queued` when its `expires_at` has come. A leased
/// row is left to its sender, which checks the expiry before sending.
#[cfg(test)] // the stores' statements repeat it; this is its tested statement
pub(crate) fn expires(state: State, expires_at_ms: Option<i64>, now_ms: i64) -> bool {
    state == State::Queued && expires_at_ms.is_some_and(|t| t <= now_ms)
}

/// The channels of `live` rows that are not in `known`: their rows are dead-lettered with
/// [`super::Reason::UNKNOWN_CHANNEL`] (replayable once the channel exists again).
pub(crate) fn unknown_channels<'a>(live: &'a [String], known: &[impl AsRef<str>]) -> Vec<&'a str> {
    live.iter()
        .filter(|c| !known.iter().any(|k| k.as_ref() == c.as_str()))
        .map(String::as_str)
        .collect()
}

/// Whether a row of an unknown channel is dead-lettered: queued, or leased by a dispatcher whose
/// lease ran out (`run_at` is the lease expiry of a `sending` row). A live lease is left alone:
/// its sender still writes the outcome.
#[cfg(test)] // the stores' statements repeat it; this is its tested statement
pub(crate) fn orphaned(state: State, run_at_ms: i64, now_ms: i64) -> bool {
    state == State::Queued || (state == State::Sending && run_at_ms <= now_ms)
}

/// Whether retention may delete a row in `state` once it is old enough: finished for good.
/// Dead letters are kept until replayed, live rows always.
#[cfg(test)] // the stores' statements repeat it; this is its tested statement
pub(crate) fn may_purge(state: State) -> bool {
    matches!(
        state,
        State::Delivered | State::Failed | State::Expired | State::Cancelled
    )
}

impl Retention {
    /// Finished rows last changed before this (Unix ms) may be deleted.
    pub fn finished_before(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.finished_ms)
    }

    /// Receipts that never matched, received before this (Unix ms), may be deleted.
    pub fn unmatched_receipts_before(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.unmatched_receipts_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    #[test]
    fn only_queued_rows_whose_expiry_has_come_expire() {
        assert!(expires(State::Queued, Some(NOW), NOW));
        assert!(expires(State::Queued, Some(NOW - 1), NOW));
        assert!(!expires(State::Queued, Some(NOW + 1), NOW));
        assert!(!expires(State::Queued, None, NOW));
        assert!(!expires(State::Sending, Some(NOW - 1), NOW));
        assert!(!expires(State::Dead, Some(NOW - 1), NOW));
    }

    #[test]
    fn channels_that_are_not_configured_are_unknown() {
        let live = vec!["sms".to_owned(), "gone".to_owned()];
        assert_eq!(unknown_channels(&live, &["sms".to_owned()]), vec!["gone"]);
        assert!(unknown_channels(&live, &live).is_empty());
    }

    #[test]
    fn a_live_lease_on_an_unknown_channel_is_left_to_its_sender() {
        assert!(orphaned(State::Queued, NOW + 60_000, NOW));
        assert!(orphaned(State::Sending, NOW, NOW));
        assert!(!orphaned(State::Sending, NOW + 1, NOW));
        assert!(!orphaned(State::Dead, NOW - 1, NOW));
    }

    #[test]
    fn retention_deletes_finished_rows_but_never_dead_letters_or_live_ones() {
        let purgeable: Vec<State> = State::ALL.into_iter().filter(|s| may_purge(*s)).collect();
        assert_eq!(
            purgeable,
            vec![
                State::Delivered,
                State::Failed,
                State::Cancelled,
                State::Expired
            ]
        );
    }

    #[test]
    fn retention_goes_on_only_while_a_batch_comes_back_full() {
        assert!(purge_again(PURGE_BATCH as u64, 0));
        assert!(purge_again(0, PURGE_BATCH as u64));
        assert!(!purge_again(PURGE_BATCH as u64 - 1, 3));
    }

    #[test]
    fn retention_cutoffs_are_now_minus_the_kept_age() {
        let r = Retention {
            finished_ms: 3_000,
            unmatched_receipts_ms: 7_000,
        };
        assert_eq!(r.finished_before(NOW), NOW - 3_000);
        assert_eq!(r.unmatched_receipts_before(NOW), NOW - 7_000);
    }
}
