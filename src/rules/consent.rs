//! Whether a recipient lets a channel reach them at all: a channel they opted out of or muted
//! ends the notification `failed` unsent, unless it is `high` priority and they let that pass
//! (see [`crate::recipients`] for what the two mean).

use crate::model::Priority;
use crate::recipients::Preferences;

/// Why a notification is not sent to its recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The recipient withdrew consent for the channel.
    OptedOut,
    /// The recipient muted the channel.
    Muted,
}

impl Refusal {
    /// The `last_code` the notification ends with.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::OptedOut => "opted_out",
            Self::Muted => "muted",
        }
    }

    /// A sentence for `last_error` and the timeline.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::OptedOut => "the recipient opted out of this channel",
            Self::Muted => "the recipient muted this channel",
        }
    }
}

/// The refusal for a notification of `priority` on `channel`, if its recipient's preferences
/// give one. An opt-out is checked before a mute.
pub(crate) fn refusal(
    channel: &str,
    priority: Priority,
    prefs: Option<&Preferences>,
) -> Option<Refusal> {
    let prefs = prefs?;
    if priority == Priority::High && prefs.high_priority_passes {
        return None;
    }
    let names = |list: &[String]| list.iter().any(|c| c == channel);
    if names(&prefs.opted_out) {
        Some(Refusal::OptedOut)
    } else if names(&prefs.muted) {
        Some(Refusal::Muted)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs(opted_out: &[&str], muted: &[&str], high_priority_passes: bool) -> Preferences {
        Preferences {
            opted_out: opted_out.iter().map(|s| s.to_string()).collect(),
            muted: muted.iter().map(|s| s.to_string()).collect(),
            high_priority_passes,
            ..Preferences::default()
        }
    }

    #[test]
    fn an_opted_out_channel_refuses_normal_priority() {
        let p = prefs(&["email"], &[], true);
        assert_eq!(
            refusal("email", Priority::Normal, Some(&p)),
            Some(Refusal::OptedOut)
        );
        assert_eq!(refusal("sms", Priority::Normal, Some(&p)), None);
    }

    #[test]
    fn a_muted_channel_refuses_with_its_own_code() {
        let p = prefs(&[], &["sms"], true);
        assert_eq!(
            refusal("sms", Priority::Low, Some(&p)).map(Refusal::code),
            Some("muted")
        );
    }

    #[test]
    fn high_priority_passes_only_when_the_recipient_allows_it() {
        assert_eq!(
            refusal("email", Priority::High, Some(&prefs(&["email"], &[], true))),
            None
        );
        assert_eq!(
            refusal(
                "email",
                Priority::High,
                Some(&prefs(&["email"], &[], false))
            ),
            Some(Refusal::OptedOut)
        );
    }

    #[test]
    fn no_preferences_refuse_nothing() {
        assert_eq!(refusal("email", Priority::Normal, None), None);
    }
}
