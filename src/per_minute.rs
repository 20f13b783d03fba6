//! The last hour of a channel's attempts, minute by minute, in memory: what the console's
//! overview draws. A ring of 60 slots, each the counts of one wall-clock minute; a slot is
//! cleared when its minute comes round again. Lost at restart and reload, like the health
//! counters.

use std::sync::Mutex;

use serde::Serialize;

/// How an attempt ended, for the health counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    Delivered,
    Failed,
    Retried,
}

/// Minutes kept.
pub(crate) const MINUTES: usize = 60;
const MINUTE_MS: i64 = 60_000;

/// Counts of delivered, failed and retried attempts per minute for the last hour.
#[derive(Debug, Default)]
pub struct PerMinute {
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    /// The newest minute counted (minutes since the Unix epoch).
    latest: i64,
    /// `[delivered, failed, retried]` of the minute `m` at `m % MINUTES`.
    counts: [[u64; 3]; MINUTES],
}

/// The last hour, oldest minute first, the current minute last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastHour {
    /// When the first minute began (Unix ms).
    pub start_ms: i64,
    pub delivered: Vec<u64>,
    pub failed: Vec<u64>,
    pub retried: Vec<u64>,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            latest: 0,
            counts: [[0; 3]; MINUTES],
        }
    }
}

fn slot(minute: i64) -> usize {
    usize::try_from(minute.rem_euclid(MINUTES as i64)).unwrap_or(0)
}

impl Ring {
    /// Makes `minute` the newest, clearing the slots of the minutes skipped since.
    fn advance(&mut self, minute: i64) {
        if minute <= self.latest {
            return;
        }
        let skipped = (minute - self.latest).min(MINUTES as i64);
        for m in (minute - skipped + 1)..=minute {
            self.counts[slot(m)] = [0; 3];
        }
        self.latest = minute;
    }
}

impl PerMinute {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one attempt that ended at `at_ms`; one older than the kept hour is dropped.
    pub fn add(&self, kind: AttemptKind, at_ms: i64) {
        let minute = at_ms.div_euclid(MINUTE_MS);
        let mut ring = self.ring();
        ring.advance(minute);
        if minute <= ring.latest - MINUTES as i64 {
            return;
        }
        let i = match kind {
            AttemptKind::Delivered => 0,
            AttemptKind::Failed => 1,
            AttemptKind::Retried => 2,
        };
        ring.counts[slot(minute)][i] += 1;
    }

    /// The hour ending with the minute of `now_ms`.
    pub fn last_hour(&self, now_ms: i64) -> LastHour {
        let now = now_ms.div_euclid(MINUTE_MS);
        let mut ring = self.ring();
        ring.advance(now);
        let first = now - MINUTES as i64 + 1;
        let column = |i: usize| -> Vec<u64> {
            (first..=now)
                .map(|m| {
                    if m > ring.latest - MINUTES as i64 {
                        ring.counts[slot(m)][i]
                    } else {
                        0
                    }
                })
                .collect()
        };
        LastHour {
            start_ms: first * MINUTE_MS,
            delivered: column(0),
            failed: column(1),
            retried: column(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_600_000_000 - 1_764_600_000_000 % MINUTE_MS;

    #[test]
    fn attempts_are_counted_in_the_minute_they_ended() {
        let p = PerMinute::default();
        p.add(AttemptKind::Delivered, T0 + 1_000);
        p.add(AttemptKind::Delivered, T0 + 59_999);
        p.add(AttemptKind::Failed, T0 + 60_000);
        p.add(AttemptKind::Retried, T0 + 61_000);
        let h = p.last_hour(T0 + 90_000);
        assert_eq!(h.start_ms, T0 + MINUTE_MS - 59 * MINUTE_MS);
        assert_eq!(h.delivered.len(), MINUTES);
        assert_eq!(&h.delivered[58..], &[2, 0]);
        assert_eq!(&h.failed[58..], &[0, 1]);
        assert_eq!(&h.retried[58..], &[0, 1]);
    }

    #[test]
    fn a_minute_an_hour_old_is_forgotten_when_its_slot_comes_round() {
        let p = PerMinute::default();
        p.add(AttemptKind::Delivered, T0);
        assert_eq!(p.last_hour(T0 + 59 * MINUTE_MS).delivered[0], 1);
        p.add(AttemptKind::Failed, T0 + 60 * MINUTE_MS);
        let h = p.last_hour(T0 + 60 * MINUTE_MS);
        assert_eq!(h.delivered.iter().sum::<u64>(), 0);
        assert_eq!(h.failed[59], 1);
    }

    #[test]
    fn a_long_quiet_spell_clears_everything() {
        let p = PerMinute::default();
        p.add(AttemptKind::Delivered, T0);
        let h = p.last_hour(T0 + 5 * 60 * MINUTE_MS);
        assert_eq!(h.delivered.iter().sum::<u64>(), 0);
    }

    #[test]
    fn a_late_report_older_than_the_hour_is_dropped() {
        let p = PerMinute::default();
        p.add(AttemptKind::Delivered, T0 + 60 * MINUTE_MS);
        p.add(AttemptKind::Delivered, T0);
        let h = p.last_hour(T0 + 60 * MINUTE_MS);
        assert_eq!(h.delivered.iter().sum::<u64>(), 1);
    }
}
