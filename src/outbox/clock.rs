//! The store's "now": the system clock, or one a test moves by hand.
//!
//! Every time a backend writes (due times, lease expiries, `updated_at`, what is overdue or old
//! enough to purge) comes from its [`Clock`], never from the database's own clock, so the
//! contract suite can move time instead of sleeping, and daemons sharing a database agree on
//! the unit.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::model::now_ms;

/// Where a store reads the time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock ([`now_ms`]).
    #[default]
    System,
    /// A clock that moves only when told (tests).
    Manual(ManualClock),
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Self::System => now_ms(),
            Self::Manual(m) => m.now_ms(),
        }
    }
}

/// A shared clock that stands still until moved; clones move together.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn starting_at(start_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }

    /// What it reads now.
    pub fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Moves it forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_move_with_it() {
        let clock = ManualClock::starting_at(1_000);
        let store = Clock::Manual(clock.clone());
        assert_eq!(store.now_ms(), 1_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(store.now_ms(), 1_250);
    }
}
