//! What a caller may do to a notification by hand: cancel it, replay a dead letter.

use crate::model::{State, Transition};

/// A caller's request to move a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// Only while `queued`: once leased it may already be on the wire.
    Cancel,
    /// Only a dead letter: back to `queued`, due now, with a fresh attempt budget
    /// (attempts from zero, no lease holder). Its [`super::LeaseToken`] is kept: a sender still
    /// holding a lease from before the row died stays fenced out.
    Replay,
}

impl Request {
    /// The one state the request applies to.
    pub(crate) fn applies_to(self) -> State {
        match self {
            Self::Cancel => State::Queued,
            Self::Replay => State::Dead,
        }
    }

    /// The state the notification is in afterwards.
    pub(crate) fn leads_to(self) -> State {
        match self {
            Self::Cancel => State::Cancelled,
            Self::Replay => State::Queued,
        }
    }

    /// The answer, given whether the store changed the row and, when it did not, the row's
    /// current state (`None`: no such notification).
    pub(crate) fn answer(self, changed: bool, current: Option<State>) -> Transition {
        match (changed, current) {
            (true, _) => Transition::Done(self.leads_to()),
            (false, None) => Transition::NotFound,
            (false, Some(state)) => Transition::Refused(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_takes_a_queued_row_to_cancelled() {
        assert_eq!(Request::Cancel.applies_to(), State::Queued);
        assert_eq!(
            Request::Cancel.answer(true, None),
            Transition::Done(State::Cancelled)
        );
    }

    #[test]
    fn replay_takes_a_dead_letter_back_to_queued() {
        assert_eq!(Request::Replay.applies_to(), State::Dead);
        assert_eq!(
            Request::Replay.answer(true, None),
            Transition::Done(State::Queued)
        );
    }

    #[test]
    fn a_request_that_changed_nothing_is_refused_with_the_state_or_not_found() {
        assert_eq!(
            Request::Cancel.answer(false, Some(State::Sending)),
            Transition::Refused(State::Sending)
        );
        assert_eq!(Request::Replay.answer(false, None), Transition::NotFound);
    }
}
