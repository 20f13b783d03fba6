//! Dedup: a notification that carries a `dedup_key` holds the key for a window; another one
//! with the same key to the **same channel and recipient** inside that window is not stored or
//! sent again. It is answered with the first one's id and counted as a duplicate on it. Unlike
//! an idempotency key, the content may differ (an alert that fires again).
//!
//! The scope is (channel, recipient, key): the same key sent to two people, or over two
//! channels, is two notifications. The window starts when the first holder is accepted and is
//! not extended by duplicates; once it is over, the next notification with the key is sent and
//! holds the key for its own window. The window is the notification's `dedup_window`, else its
//! channel's `dedup_window`.
//!
//! The stores apply [`holds`] in one atomic upsert on the key (a unique constraint), never a
//! read then a write, so two daemons enqueueing the same key at once agree on one holder.

use std::time::Duration;

use crate::model::{DedupClaim, Rule, RuleEvent};

/// Longest dedup key accepted (bytes).
pub(crate) const MAX_KEY_LEN: usize = 255;
/// Longest window accepted: a key is a short-lived thing, and the table keeps one row per key
/// until its window is over.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a dedup request is refused; [`DedupError::field`] names the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DedupError {
    #[error("must be 1 to {MAX_KEY_LEN} bytes")]
    KeyLength,
    #[error("{0}")]
    Window(String),
    #[error("a dedup_key needs a window: give dedup_window, or set dedup_window on the channel")]
    NoWindow,
    #[error("only used with a dedup_key")]
    WindowWithoutKey,
}

impl DedupError {
    /// The request field the refusal names.
    pub(crate) fn field(&self) -> &'static str {
        match self {
            Self::KeyLength => "dedup_key",
            _ => "dedup_window",
        }
    }
}

/// Parses a request's `dedup_window` (`"10m"`, `"1h 30m"`), within `1ms..=MAX_WINDOW`.
pub(crate) fn parse_window(text: &str) -> Result<Duration, DedupError> {
    let window = humantime::parse_duration(text).map_err(|e| {
        DedupError::Window(format!(
            "{text:?} is not a duration ({e}); write e.g. \"30s\", \"10m\""
        ))
    })?;
    check_window(window)?;
    Ok(window)
}

/// Refuses an empty window or one longer than [`MAX_WINDOW`].
pub(crate) fn check_window(window: Duration) -> Result<(), DedupError> {
    if window.is_zero() || window > MAX_WINDOW {
        return Err(DedupError::Window(format!(
            "must be more than 0 and at most {}",
            humantime::format_duration(MAX_WINDOW)
        )));
    }
    Ok(())
}

/// The key a notification accepted at `created_at_ms` holds, and until when: its own window
/// (`requested`) wins over its channel's (`channel_default`). `None` without a key.
pub(crate) fn claim(
    key: Option<&str>,
    requested: Option<Duration>,
    channel_default: Option<Duration>,
    created_at_ms: i64,
) -> Result<Option<DedupClaim>, DedupError> {
    let Some(key) = key else {
        return match requested {
            Some(_) => Err(DedupError::WindowWithoutKey),
            None => Ok(None),
        };
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(DedupError::KeyLength);
    }
    let window = requested.or(channel_default).ok_or(DedupError::NoWindow)?;
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    Ok(Some(DedupClaim {
        key: key.to_owned(),
        until_ms: created_at_ms.saturating_add(window_ms),
    }))
}

/// Whether a key held until `until_ms` still holds at `now_ms` (the window is half-open: at
/// `until_ms` it is free again). The stores' upsert repeats this condition in SQL.
#[cfg(test)] // the stores' upsert is the rule in use; this is its tested statement
pub(crate) fn holds(until_ms: i64, now_ms: i64) -> bool {
    now_ms < until_ms
}

/// The timeline line of the holder `first` when a notification with `key` was merged into it.
pub(crate) fn merged(first: &str, key: &str, now_ms: i64) -> RuleEvent {
    RuleEvent {
        notification: first.into(),
        at_ms: now_ms,
        rule: Rule::Dedup,
        detail: format!(
            "a duplicate with dedup key {key:?} was counted here instead of being sent"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_notifications_own_window_wins_over_the_channels() {
        let c = claim(Some("disk-full"), Some(MIN), Some(10 * MIN), 1_000).unwrap();
        assert_eq!(
            c,
            Some(DedupClaim {
                key: "disk-full".into(),
                until_ms: 61_000
            })
        );
    }

    #[test]
    fn the_channels_window_applies_when_the_notification_gives_none() {
        let c = claim(Some("k"), None, Some(10 * MIN), 5).unwrap().unwrap();
        assert_eq!(c.until_ms, 600_005);
    }

    #[test]
    fn a_key_without_any_window_is_refused_naming_dedup_window() {
        let e = claim(Some("k"), None, None, 0).unwrap_err();
        assert_eq!(e, DedupError::NoWindow);
        assert_eq!(e.field(), "dedup_window");
    }

    #[test]
    fn a_window_without_a_key_is_refused() {
        assert_eq!(
            claim(None, Some(MIN), None, 0),
            Err(DedupError::WindowWithoutKey)
        );
        assert_eq!(claim(None, None, Some(MIN), 0), Ok(None));
    }

    #[test]
    fn an_empty_or_overlong_key_is_refused_naming_dedup_key() {
        for key in [String::new(), "k".repeat(MAX_KEY_LEN + 1)] {
            let e = claim(Some(&key), Some(MIN), None, 0).unwrap_err();
            assert_eq!(e.field(), "dedup_key");
        }
    }

    #[test]
    fn windows_parse_as_durations_within_bounds() {
        assert_eq!(parse_window("10m"), Ok(10 * MIN));
        assert!(parse_window("0s").is_err());
        assert!(parse_window("31days").is_err());
        assert!(parse_window("soon").is_err());
    }

    #[test]
    fn a_key_holds_until_the_end_of_its_window_exclusive() {
        assert!(holds(1_000, 999));
        assert!(!holds(1_000, 1_000));
        assert!(!holds(1_000, 1_001));
    }
}
