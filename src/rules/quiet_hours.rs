//! When a notification may be sent: not inside its recipient's quiet hours (the recipient's own,
//! else its channel's), and only inside its own `deliver_between` window. A notification due at
//! the wrong time waits, with no attempt spent, until the time is right; `high` priority passes
//! quiet hours unless the channel or the recipient says otherwise, never its own window.
//!
//! Times are read in a zone: the window's own (`deliver_between.time_zone`), else the
//! recipient's, else the channel's `quiet_hours.time_zone`, else UTC.

use crate::model::{Between, Priority};
use crate::window::{Window, Zone, instant};

/// A channel's quiet hours, checked (config `[channels.<name>.quiet_hours]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelQuiet {
    /// `None` when the channel only names a default zone for its recipients.
    pub window: Option<Window>,
    pub zone: Zone,
    pub high_priority_passes: bool,
}

/// What the rule reads of a recipient's preferences.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecipientQuiet {
    pub zone: Option<Zone>,
    pub window: Option<Window>,
    pub high_priority_passes: bool,
}

/// Which rule holds a notification back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Inside quiet hours: waits until they end.
    QuietHours,
    /// Outside its `deliver_between`: waits until it opens.
    DeliverBetween,
}

impl Hold {
    /// The `last_code` a held notification carries while it waits.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::QuietHours => "quiet_hours",
            Self::DeliverBetween => "deliver_between",
        }
    }
}

/// A notification held back: due again at `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wait {
    pub until_ms: i64,
    pub hold: Hold,
    /// For the timeline: which window, in which zone, whose.
    pub detail: String,
}

/// Whether a notification of `priority` due at `now_ms` must wait, and until when.
pub(crate) fn wait(
    priority: Priority,
    channel: Option<&ChannelQuiet>,
    recipient: Option<&RecipientQuiet>,
    between: Option<&Between>,
    now_ms: i64,
) -> Option<Wait> {
    let now = instant(now_ms);
    let zone = recipient
        .and_then(|r| r.zone.clone())
        .or_else(|| channel.map(|c| c.zone.clone()))
        .unwrap_or_else(Zone::utc);
    let quiet = match (
        recipient.and_then(|r| r.window),
        channel.and_then(|c| c.window),
    ) {
        (Some(w), _) => Some((w, "recipient's")),
        (None, Some(w)) => Some((w, "channel's")),
        (None, None) => None,
    };
    let high_passes = channel.is_none_or(|c| c.high_priority_passes)
        && recipient.is_none_or(|r| r.high_priority_passes);
    if let Some((window, whose)) = quiet
        && !(priority == Priority::High && high_passes)
        && window.contains(&zone, now)
    {
        let until = window.next_end(&zone, now);
        return Some(Wait {
            until_ms: until.as_millisecond(),
            hold: Hold::QuietHours,
            detail: format!(
                "inside the {whose} quiet hours {}-{} ({}): waits until {until}",
                window.start.render(),
                window.end.render(),
                zone.name()
            ),
        });
    }
    if let Some(b) = between {
        let zone = b.zone.clone().unwrap_or(zone);
        if !b.window.contains(&zone, now) {
            let until = b.window.next_start(&zone, now);
            return Some(Wait {
                until_ms: until.as_millisecond(),
                hold: Hold::DeliverBetween,
                detail: format!(
                    "outside its deliver_between {}-{} ({}): waits until {until}",
                    b.window.start.render(),
                    b.window.end.render(),
                    zone.name()
                ),
            });
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::DeliverBetween;
    use crate::window::WindowSpec;

    fn ms(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn window(start: &str, end: &str) -> Window {
        Window::from_spec(&WindowSpec {
            start: start.into(),
            end: end.into(),
        })
        .unwrap()
    }

    fn channel_nights(zone: &str) -> ChannelQuiet {
        ChannelQuiet {
            window: Some(window("22:00", "07:00")),
            zone: Zone::named(zone).unwrap(),
            high_priority_passes: true,
        }
    }

    #[test]
    fn a_notification_inside_the_channels_quiet_hours_waits_until_they_end() {
        let ch = channel_nights("Europe/Paris");
        let w = wait(
            Priority::Normal,
            Some(&ch),
            None,
            None,
            ms("2026-01-15T23:00:00Z"),
        )
        .unwrap();
        assert_eq!(w.hold, Hold::QuietHours);
        assert_eq!(w.until_ms, ms("2026-01-16T06:00:00Z"));
    }

    #[test]
    fn outside_quiet_hours_nothing_waits() {
        let ch = channel_nights("Europe/Paris");
        assert_eq!(
            wait(
                Priority::Normal,
                Some(&ch),
                None,
                None,
                ms("2026-01-15T12:00:00Z")
            ),
            None
        );
    }

    #[test]
    fn the_recipients_quiet_hours_and_zone_win_over_the_channels() {
        let ch = channel_nights("Europe/Paris");
        let r = RecipientQuiet {
            zone: Some(Zone::named("America/New_York").unwrap()),
            window: Some(window("20:00", "08:00")),
            high_priority_passes: true,
        };
        // 12:00Z is 07:00 in New York (winter, -05:00): inside the recipient's 20:00-08:00.
        let w = wait(
            Priority::Normal,
            Some(&ch),
            Some(&r),
            None,
            ms("2026-01-15T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(w.until_ms, ms("2026-01-15T13:00:00Z"));
        assert!(w.detail.contains("recipient's"), "{}", w.detail);
    }

    #[test]
    fn the_channels_window_is_read_in_the_recipients_zone() {
        let ch = channel_nights("UTC");
        let r = RecipientQuiet {
            zone: Some(Zone::named("Asia/Tokyo").unwrap()),
            window: None,
            high_priority_passes: true,
        };
        // 14:00Z is 23:00 in Tokyo: quiet until 07:00 Tokyo, 22:00Z.
        let w = wait(
            Priority::Low,
            Some(&ch),
            Some(&r),
            None,
            ms("2026-05-01T14:00:00Z"),
        )
        .unwrap();
        assert_eq!(w.until_ms, ms("2026-05-01T22:00:00Z"));
    }

    #[test]
    fn high_priority_passes_quiet_hours_unless_the_channel_or_recipient_says_no() {
        let now = ms("2026-01-15T23:00:00Z");
        let mut ch = channel_nights("Europe/Paris");
        assert_eq!(wait(Priority::High, Some(&ch), None, None, now), None);
        let strict = RecipientQuiet {
            zone: None,
            window: None,
            high_priority_passes: false,
        };
        assert!(wait(Priority::High, Some(&ch), Some(&strict), None, now).is_some());
        ch.high_priority_passes = false;
        assert!(wait(Priority::High, Some(&ch), None, None, now).is_some());
    }

    #[test]
    fn outside_its_deliver_between_a_notification_waits_for_it_to_open() {
        let b = DeliverBetween {
            start: "09:00".into(),
            end: "17:00".into(),
            time_zone: Some("Europe/Paris".into()),
        }
        .check()
        .unwrap();
        let w = wait(
            Priority::High,
            None,
            None,
            Some(&b),
            ms("2026-07-01T16:30:00Z"),
        )
        .unwrap();
        assert_eq!(w.hold, Hold::DeliverBetween);
        assert_eq!(w.until_ms, ms("2026-07-02T07:00:00Z"));
        assert_eq!(
            wait(
                Priority::Low,
                None,
                None,
                Some(&b),
                ms("2026-07-01T08:00:00Z")
            ),
            None
        );
    }

    #[test]
    fn deliver_between_opens_at_nine_local_across_the_spring_change_in_two_zones() {
        let office = |zone: &str| {
            DeliverBetween {
                start: "09:00".into(),
                end: "17:00".into(),
                time_zone: Some(zone.into()),
            }
            .check()
            .unwrap()
        };
        // Paris changes on 2026-03-29 (+01:00 → +02:00), New York on 2026-03-08 (-05:00 →
        // -04:00): waiting from a Saturday evening, the window opens at 09:00 local each time.
        let paris = office("Europe/Paris");
        let w = wait(
            Priority::Normal,
            None,
            None,
            Some(&paris),
            ms("2026-03-28T20:00:00Z"),
        )
        .unwrap();
        assert_eq!(w.until_ms, ms("2026-03-29T07:00:00Z"));
        let ny = office("America/New_York");
        let w = wait(
            Priority::Normal,
            None,
            None,
            Some(&ny),
            ms("2026-03-07T23:00:00Z"),
        )
        .unwrap();
        assert_eq!(w.until_ms, ms("2026-03-08T13:00:00Z"));
    }

    #[test]
    fn a_bad_deliver_between_names_its_part() {
        let err = DeliverBetween {
            start: "09:00".into(),
            end: "17:00".into(),
            time_zone: Some("Nowhere/Special".into()),
        }
        .check()
        .unwrap_err();
        assert_eq!(err.part, "time_zone");
    }
}
