//! What `/readyz` logs: a line when the daemon becomes unready and one when it is ready again,
//! not one per probe (a load balancer polling an unready daemon every second would fill the
//! journal with the same warning).

use std::sync::atomic::{AtomicBool, Ordering};

/// A change of readiness worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    BecameUnready,
    BecameReady,
}

/// The readiness the last probe saw; starts ready, so the first unready probe is reported.
#[derive(Debug)]
pub(super) struct ReadinessLog {
    unready: AtomicBool,
}

impl Default for ReadinessLog {
    fn default() -> Self {
        Self {
            unready: AtomicBool::new(false),
        }
    }
}

impl ReadinessLog {
    /// Records what a probe found; `Some` when it differs from the probe before.
    pub(super) fn observe(&self, ready: bool) -> Option<Change> {
        let was_unready = self.unready.swap(!ready, Ordering::Relaxed);
        match (was_unready, ready) {
            (false, false) => Some(Change::BecameUnready),
            (true, true) => Some(Change::BecameReady),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_of_readiness_are_reported() {
        let log = ReadinessLog::default();
        let seen: Vec<_> = [true, false, false, false, true, true, false]
            .into_iter()
            .map(|ready| log.observe(ready))
            .collect();
        assert_eq!(
            seen,
            vec![
                None,
                Some(Change::BecameUnready),
                None,
                None,
                Some(Change::BecameReady),
                None,
                Some(Change::BecameUnready),
            ]
        );
    }
}
