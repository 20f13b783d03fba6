//! A daily window of local time (`{"start":"22:00","end":"07:00"}`) in an IANA time zone, and
//! the two questions the delivery rules ask of it: is this instant inside, and when does a
//! given local time next come round. Pure: the caller passes "now"; daylight-saving changes are
//! jiff's (its bundled tz database, so every host agrees).
//!
//! Local times that a DST change skips or repeats: a window edge in a gap (02:30 on a spring-
//! forward night) falls on the first instant after the gap; an edge in a fold (01:30 on a
//! fall-back night) is its first occurrence, or the second when the first has passed.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A time zone name that is known to the tz database, kept with its parsed zone.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// The zone of an IANA name (`Europe/Paris`, `UTC`); `None` when the tz database has no such
    /// zone.
    pub fn named(name: &str) -> Option<Self> {
        let tz = TimeZone::get(name).ok()?;
        Some(Self {
            name: name.to_owned(),
            tz,
        })
    }

    /// Coordinated Universal Time.
    pub fn utc() -> Self {
        Self {
            name: "UTC".to_owned(),
            tz: TimeZone::UTC,
        }
    }

    /// The IANA name it was made from.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A local time of day, `HH:MM` or `HH:MM:SS` (24-hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalTime(Time);

impl LocalTime {
    /// Parses `HH:MM` or `HH:MM:SS`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
            return None;
        }
        let num = |p: &str| -> Option<i8> {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse().ok()
            } else {
                None
            }
        };
        let hour = num(parts[0])?;
        let minute = num(parts[1])?;
        let second = match parts.get(2) {
            Some(p) => num(p)?,
            None => 0,
        };
        Time::new(hour, minute, second, 0).ok().map(Self)
    }

    /// As written back: `HH:MM`, or `HH:MM:SS` when it has seconds.
    pub fn render(self) -> String {
        let t = self.0;
        if t.second() == 0 {
            format!("{:02}:{:02}", t.hour(), t.minute())
        } else {
            format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
        }
    }
}

/// A window as written in JSON and TOML: local `start` and `end` (`HH:MM`), crossing midnight
/// when `end` is earlier than `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({"start": "22:00", "end": "07:00"}))]
pub struct WindowSpec {
    /// Local time the window opens, `HH:MM` or `HH:MM:SS`.
    pub start: String,
    /// Local time it closes (exclusive); earlier than `start` means the next day.
    pub end: String,
}

/// Why a window was refused, naming the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct BadWindow {
    /// `start`, `end` or `time_zone`.
    pub part: &'static str,
    pub message: String,
}

/// A checked daily window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: LocalTime,
    pub end: LocalTime,
}

impl Window {
    /// Checks a written window: both times valid and different (an empty or whole-day window
    /// would say nothing the absence of one does not).
    pub fn from_spec(spec: &WindowSpec) -> Result<Self, BadWindow> {
        let time = |part: &'static str, s: &str| {
            LocalTime::parse(s).ok_or_else(|| BadWindow {
                part,
                message: format!("{s:?} is not a local time HH:MM or HH:MM:SS"),
            })
        };
        let start = time("start", &spec.start)?;
        let end = time("end", &spec.end)?;
        if start == end {
            return Err(BadWindow {
                part: "end",
                message: "is the same time as start: the window would be empty".into(),
            });
        }
        Ok(Self { start, end })
    }

    /// The window written back in its canonical form.
    pub fn spec(&self) -> WindowSpec {
        WindowSpec {
            start: self.start.render(),
            end: self.end.render(),
        }
    }

    /// Whether the local time at `now` in `zone` is inside (start inclusive, end exclusive).
    pub fn contains(&self, zone: &Zone, now: Timestamp) -> bool {
        let t = LocalTime(now.to_zoned_datetime(zone.tz.clone()).time());
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// When it next closes after `now` (while inside: when a quiet window is over).
    pub fn next_end(&self, zone: &Zone, now: Timestamp) -> Timestamp {
        next_occurrence(self.end, zone, now)
    }

    /// When it next opens after `now` (while outside: when a delivery window begins).
    pub fn next_start(&self, zone: &Zone, now: Timestamp) -> Timestamp {
        next_occurrence(self.start, zone, now)
    }
}

/// The first instant after `now` whose local time in `zone` is `at` (or, for a time a DST gap
/// skips that day, the first instant after the gap).
fn next_occurrence(at: LocalTime, zone: &Zone, now: Timestamp) -> Timestamp {
    let today: Date = now.to_zoned_datetime(zone.tz.clone()).date();
    for days in 0..=2_i64 {
        let Ok(date) = today.checked_add(days.days()) else {
            break;
        };
        let ambiguous = zone.tz.to_ambiguous_timestamp(at.0.to_datetime(date));
        // A fold gives two instants: the earlier first, then the later if the earlier passed.
        for candidate in [ambiguous.compatible(), ambiguous.later()]
            .into_iter()
            .flatten()
        {
            if candidate > now {
                return candidate;
            }
        }
    }
    // Only at the end of jiff's range: a day from now will do.
    now.checked_add(24.hours()).unwrap_or(now)
}

/// Milliseconds since the Unix epoch as a jiff instant (clamped to jiff's range).
pub(crate) fn instant(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn window(start: &str, end: &str) -> Window {
        Window::from_spec(&WindowSpec {
            start: start.into(),
            end: end.into(),
        })
        .unwrap()
    }

    fn zone(name: &str) -> Zone {
        Zone::named(name).unwrap()
    }

    #[test]
    fn local_times_are_hh_mm_or_hh_mm_ss() {
        assert_eq!(LocalTime::parse("07:00").unwrap().render(), "07:00");
        assert_eq!(LocalTime::parse("23:59:30").unwrap().render(), "23:59:30");
        for bad in [
            "7:00",
            "24:00",
            "12:60",
            "12",
            "12:00:00:00",
            "ab:cd",
            "+1:00",
            "",
        ] {
            assert_eq!(LocalTime::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_empty_window_is_refused_naming_its_end() {
        let err = Window::from_spec(&WindowSpec {
            start: "22:00".into(),
            end: "22:00".into(),
        })
        .unwrap_err();
        assert_eq!(err.part, "end");
    }

    #[test]
    fn unknown_zones_are_refused() {
        assert!(Zone::named("Europe/Paris").is_some());
        assert!(Zone::named("Mars/Olympus_Mons").is_none());
    }

    #[test]
    fn a_window_across_midnight_contains_the_night_in_its_own_zone() {
        let night = window("22:00", "07:00");
        let paris = zone("Europe/Paris");
        // 21:30 UTC in winter is 22:30 in Paris.
        assert!(night.contains(&paris, at("2026-01-15T21:30:00Z")));
        assert!(!night.contains(&Zone::utc(), at("2026-01-15T21:30:00Z")));
        // 06:59 inside, 07:00 outside (end exclusive).
        assert!(night.contains(&paris, at("2026-01-15T05:59:00Z")));
        assert!(!night.contains(&paris, at("2026-01-15T06:00:00Z")));
    }

    #[test]
    fn a_daytime_window_contains_only_the_day() {
        let office = window("09:00", "17:00");
        let utc = Zone::utc();
        assert!(office.contains(&utc, at("2026-03-02T09:00:00Z")));
        assert!(!office.contains(&utc, at("2026-03-02T17:00:00Z")));
        assert!(!office.contains(&utc, at("2026-03-02T08:59:59Z")));
    }

    #[test]
    fn quiet_hours_end_at_seven_local_across_the_spring_change_in_paris() {
        // Europe/Paris moves from +01:00 to +02:00 at 02:00 on 2026-03-29: the night is an
        // hour shorter, and 07:00 local is 05:00 UTC instead of 06:00.
        let night = window("22:00", "07:00");
        let paris = zone("Europe/Paris");
        let before = at("2026-03-28T23:30:00Z"); // 00:30 +01:00
        assert!(night.contains(&paris, before));
        assert_eq!(night.next_end(&paris, before), at("2026-03-29T05:00:00Z"));
        // The night before the change ends at 06:00 UTC.
        let earlier = at("2026-03-27T23:30:00Z");
        assert_eq!(night.next_end(&paris, earlier), at("2026-03-28T06:00:00Z"));
    }

    #[test]
    fn quiet_hours_end_at_seven_local_across_the_autumn_change_in_new_york() {
        // America/New_York moves from -04:00 to -05:00 at 02:00 on 2026-11-01: 07:00 local is
        // 12:00 UTC after the change, 11:00 UTC the day before.
        let night = window("22:00", "07:00");
        let ny = zone("America/New_York");
        let during = at("2026-11-01T06:30:00Z"); // 01:30 -05:00, the second time round
        assert!(night.contains(&ny, during));
        assert_eq!(night.next_end(&ny, during), at("2026-11-01T12:00:00Z"));
        let day_before = at("2026-10-31T05:00:00Z"); // 01:00 -04:00
        assert_eq!(night.next_end(&ny, day_before), at("2026-10-31T11:00:00Z"));
    }

    #[test]
    fn an_edge_in_the_spring_gap_falls_just_after_it() {
        // 02:30 does not exist in Paris on 2026-03-29: the window closes at 03:30 +02:00.
        let night = window("23:00", "02:30");
        let paris = zone("Europe/Paris");
        let inside = at("2026-03-28T23:45:00Z"); // 00:45 +01:00
        assert!(night.contains(&paris, inside));
        assert_eq!(night.next_end(&paris, inside), at("2026-03-29T01:30:00Z"));
    }

    #[test]
    fn an_edge_in_the_autumn_fold_is_its_next_occurrence() {
        // 01:30 happens twice in New York on 2026-11-01 (05:30Z at -04:00, 06:30Z at -05:00).
        let w = window("01:30", "06:00");
        let ny = zone("America/New_York");
        assert_eq!(
            w.next_start(&ny, at("2026-11-01T05:00:00Z")),
            at("2026-11-01T05:30:00Z")
        );
        assert_eq!(
            w.next_start(&ny, at("2026-11-01T06:00:00Z")),
            at("2026-11-01T06:30:00Z")
        );
        assert_eq!(
            w.next_start(&ny, at("2026-11-01T06:30:00Z")),
            at("2026-11-02T06:30:00Z")
        );
    }

    #[test]
    fn a_delivery_window_next_opens_today_or_tomorrow() {
        let office = window("09:00", "17:00");
        let paris = zone("Europe/Paris");
        assert_eq!(
            office.next_start(&paris, at("2026-06-10T05:00:00Z")),
            at("2026-06-10T07:00:00Z")
        );
        assert_eq!(
            office.next_start(&paris, at("2026-06-10T16:00:00Z")),
            at("2026-06-11T07:00:00Z")
        );
    }

    #[test]
    fn the_canonical_form_round_trips() {
        let w = window("22:00", "07:00:30");
        assert_eq!(
            w.spec(),
            WindowSpec {
                start: "22:00".into(),
                end: "07:00:30".into()
            }
        );
    }
}
