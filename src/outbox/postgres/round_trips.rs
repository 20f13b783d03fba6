//! How many round trips this daemon made to PostgreSQL: every statement, every transaction
//! command (BEGIN, COMMIT) and every connection check the pool sends (the check sqlx makes as a
//! connection goes back to the pool, and ours on taking one that sat idle). It is the figure
//! batching is judged by (`notifyd bench` divides it by the notifications delivered), so it is
//! counted where each of them is sent, never estimated. Not counted: migrations at startup, the
//! wake-up listener's own connection, and the one-time preparation of a statement on a new
//! connection (sqlx keeps prepared statements per connection).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared counter of round trips; clones count into the same total.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoundTrips(Arc<AtomicU64>);

impl RoundTrips {
    /// Counts `n` round trips.
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one round trip.
    pub(crate) fn one(&self) {
        self.add(1);
    }

    /// The total so far.
    pub(crate) fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_count_into_one_total() {
        let trips = RoundTrips::default();
        let other = trips.clone();
        trips.one();
        other.add(3);
        assert_eq!(trips.total(), 4);
    }
}
