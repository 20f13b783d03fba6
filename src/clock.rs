//! The daemon's one clock. Every "now" goes through here (clippy's `disallowed-methods` in
//! `clippy.toml` refuses the others), so there are two kinds of time and one way between them:
//!
//! - **wall time**, [`WallMs`]: milliseconds since the Unix epoch, what the queue stores and the
//!   API shows (due times, expiries, attempt records);
//! - **policy time**, tokio's [`Instant`]: monotonic, what the breaker, the rate limiters, holds
//!   and leases count in, so their tests run on paused time, deterministic and instant.
//!
//! A policy deadline becomes a wall time only when it is written down ([`wall_at`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use tokio::time::Instant;

/// Wall time: milliseconds since the Unix epoch, the queue's unit of time.
pub(crate) type WallMs = i64;

/// Wall time now.
#[allow(clippy::disallowed_methods)] // the one place the wall clock is read
pub fn now_ms() -> WallMs {
    wall_ms(SystemTime::now())
}

/// Wall time now, in whole seconds (signature timestamps, receipt freshness).
pub(crate) fn now_secs() -> u64 {
    u64::try_from(now_ms() / 1000).unwrap_or(0)
}

/// Policy time now (tokio's clock: paused and advanced by hand in tests).
#[allow(clippy::disallowed_methods)] // the one place the monotonic clock is read
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// Milliseconds of a duration, saturating (never near `i64::MAX`, so sums cannot overflow).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The wall time of a policy deadline: now plus what is left until it (zero if it passed).
pub(crate) fn wall_at(at: Instant) -> WallMs {
    now_ms() + millis(at.saturating_duration_since(now()))
}

/// A `SystemTime` (a message's `created_at`) as wall time; before the epoch reads as 0.
pub(crate) fn wall_ms(t: SystemTime) -> WallMs {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Wall time as a `SystemTime` (what `Message::created_at` carries); negative reads as the epoch.
pub(crate) fn system_time(ms: WallMs) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Milliseconds from wall time `since` to `now`: zero if `since` is later, and saturating, as
/// `since` may be another program's stored value (a plain-SQL `run_at` of `i64::MIN`).
pub(crate) fn elapsed_ms(now: WallMs, since: WallMs) -> i64 {
    now.saturating_sub(since).max(0)
}

/// Unix milliseconds as RFC 3339 (UTC); `None` for a time RFC 3339 cannot write.
pub(crate) fn rfc3339_text(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

/// Unix milliseconds as an RFC 3339 JSON string (UTC), or `null`.
pub(crate) fn rfc3339(ms: i64) -> serde_json::Value {
    rfc3339_text(ms)
        .map(serde_json::Value::String)
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_since_any_stored_value_saturates_instead_of_overflowing() {
        assert_eq!(elapsed_ms(1_700_000_000_000, 1_699_999_998_500), 1_500);
        assert_eq!(elapsed_ms(1_700_000_000_000, i64::MIN), i64::MAX);
        assert_eq!(elapsed_ms(1_700_000_000_000, i64::MAX), 0);
    }

    #[test]
    fn wall_time_round_trips_through_system_time() {
        assert_eq!(wall_ms(system_time(1_700_000_000_123)), 1_700_000_000_123);
        assert_eq!(system_time(-5), UNIX_EPOCH);
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_deadline_becomes_the_wall_time_it_falls_on() {
        let before = now_ms();
        let at = wall_at(now() + Duration::from_secs(30));
        assert!(
            (before + 30_000..=now_ms() + 30_000).contains(&at),
            "{}",
            at - before
        );
        assert!(wall_at(now() - Duration::from_secs(1)) <= now_ms());
    }

    #[test]
    fn millis_saturate_far_below_overflow() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), i64::MAX / 2);
    }
}
