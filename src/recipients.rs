//! A recipient's delivery preferences (`PUT /v1/recipients/{address}`, `notifyd recipients
//! set`): time zone, quiet hours, muted and opted-out channels. The request shape, its
//! validation, and how an address is matched. The rules that read them are in
//! [`crate::rules::preferences`]; the store keeps them beside the queue.
//!
//! **Addresses.** Preferences belong to an address as notifications carry it in `to`, on every
//! channel that sends to it. E-mail addresses are matched without regard to case (RFC 5321 lets
//! a mailbox's local part be case-sensitive, but no mailbox provider treats it so, and a person
//! must not need one entry per spelling), and a display name (`Alice <alice@example.com>`) is
//! dropped. Every other address (phone number, push token, Slack id, URL) is matched exactly:
//! those are case-sensitive.
//!
//! **Muted and opted out.** Both stop a channel's notifications to the recipient, which end
//! `failed` (code `muted` or `opted_out`) without being sent: neither is kept to arrive at once
//! when lifted, since a pile of stale notifications is what a person who silenced a channel
//! least expects. The difference is who set it and what it means: `opted_out` is a withdrawal of
//! consent (the e-mail unsubscribe link sets it, RFC 8058), `muted` a person's choice for now.
//! A `high` priority notification passes both, and quiet hours, unless `high_priority_passes` is
//! `false`.

use notifyd_channels::FieldError;
use serde::{Deserialize, Serialize};

use crate::window::{Window, WindowSpec, Zone};

/// Longest address a preference may be stored for (the same bound as a notification's `to`).
pub(crate) const MAX_ADDRESS_LEN: usize = 8192;
/// Most channel names in `muted` or `opted_out`.
pub(crate) const MAX_CHANNELS: usize = 64;

/// A recipient's preferences, as the API takes and shows them and the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(example = serde_json::json!({
    "time_zone": "Europe/Paris",
    "quiet_hours": {"start": "22:00", "end": "07:00"},
    "muted": ["sms"],
    "opted_out": ["newsletter"],
    "high_priority_passes": true
}))]
pub struct Preferences {
    /// IANA time zone the quiet hours (and a `deliver_between` without its own zone) are read
    /// in; the channel's `quiet_hours.time_zone` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Local hours nothing is sent; overrides the channel's own quiet hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<WindowSpec>,
    /// Channels whose notifications to this recipient end `failed` (`muted`) unsent.
    #[serde(default)]
    pub muted: Vec<String>,
    /// Channels the recipient withdrew consent for: their notifications end `failed`
    /// (`opted_out`) unsent.
    #[serde(default)]
    pub opted_out: Vec<String>,
    /// Whether a `high` priority notification passes quiet hours, a mute and an opt-out.
    #[serde(default = "yes")]
    pub high_priority_passes: bool,
}

fn yes() -> bool {
    true
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            time_zone: None,
            quiet_hours: None,
            muted: Vec::new(),
            opted_out: Vec::new(),
            high_priority_passes: true,
        }
    }
}

/// What the rules read from checked preferences.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub zone: Option<Zone>,
    pub quiet_hours: Option<Window>,
}

impl Preferences {
    /// Checks every field; `is_channel` says whether a channel name is configured. Channel lists
    /// come back sorted and without repeats, the window in its canonical form.
    pub fn validate(mut self, is_channel: impl Fn(&str) -> bool) -> Result<Self, FieldError> {
        let checked = self.checked().map_err(|(field, message)| {
            let code = if field == "time_zone" {
                "unknown_time_zone"
            } else {
                "invalid_window"
            };
            FieldError::new(field, code, message)
        })?;
        self.quiet_hours = checked.quiet_hours.map(|w| w.spec());
        for (name, list) in [
            ("muted", &mut self.muted),
            ("opted_out", &mut self.opted_out),
        ] {
            if list.len() > MAX_CHANNELS {
                return Err(FieldError::new(
                    name,
                    "too_many",
                    format!("at most {MAX_CHANNELS} channels"),
                ));
            }
            if let Some((i, c)) = list.iter().enumerate().find(|(_, c)| !is_channel(c)) {
                return Err(FieldError::new(
                    format!("{name}[{i}]"),
                    "unknown_channel",
                    format!("no channel named {c:?} is configured"),
                ));
            }
            list.sort();
            list.dedup();
        }
        Ok(self)
    }

    /// The JSON text a store keeps.
    pub fn to_stored(&self) -> String {
        // A struct of strings, lists and a bool: serializing it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Preferences as a store kept them; only notifyd writes them, so text that does not read
    /// is a bug or a hand edit, reported with its address.
    pub fn from_stored(address: &str, json: &str) -> Result<Self, String> {
        serde_json::from_str(json)
            .map_err(|e| format!("stored preferences of {address:?} unreadable: {e}"))
    }

    /// Adds `channel` to `opted_out`, keeping the list sorted and without repeats.
    pub fn opt_out(&mut self, channel: &str) {
        if let Err(at) = self.opted_out.binary_search_by(|c| c.as_str().cmp(channel)) {
            self.opted_out.insert(at, channel.to_owned());
        }
    }

    /// The time zone and window as the rules use them, or the field at fault and why. Stored
    /// preferences were validated when written; this is also how they are read back.
    pub fn checked(&self) -> Result<Checked, (String, String)> {
        let zone = match &self.time_zone {
            Some(name) => Some(Zone::named(name).ok_or_else(|| {
                (
                    "time_zone".to_owned(),
                    format!("{name:?} is not an IANA time zone (such as Europe/Paris)"),
                )
            })?),
            None => None,
        };
        let quiet_hours = match &self.quiet_hours {
            Some(spec) => Some(
                Window::from_spec(spec)
                    .map_err(|e| (format!("quiet_hours.{}", e.part), e.message))?,
            ),
            None => None,
        };
        Ok(Checked { zone, quiet_hours })
    }
}

/// The address preferences are stored and looked up under (see the module's doc): an e-mail
/// address without display name, in lower case; anything else as it is.
pub(crate) fn normalize(address: &str) -> String {
    let trimmed = address.trim();
    let inner = match (trimmed.rfind('<'), trimmed.strip_suffix('>')) {
        (Some(open), Some(rest)) if looks_like_email(&rest[open + 1..]) => &rest[open + 1..],
        _ => trimmed,
    };
    if looks_like_email(inner) {
        inner.to_lowercase()
    } else {
        address.to_owned()
    }
}

/// One `@` with something on both sides, and nothing a URL, token or phrase would hold.
fn looks_like_email(s: &str) -> bool {
    let mut parts = s.split('@');
    matches!((parts.next(), parts.next(), parts.next()), (Some(local), Some(domain), None)
        if !local.is_empty() && !domain.is_empty())
        && !s.contains(|c: char| c.is_whitespace() || matches!(c, '/' | ':' | '<' | '>'))
}

/// Checks an address given in a URL or on the command line, and returns its normalized form.
pub(crate) fn address(raw: &str) -> Result<String, FieldError> {
    if raw.trim().is_empty() {
        return Err(FieldError::new("address", "invalid_recipient", "is empty"));
    }
    if raw.len() > MAX_ADDRESS_LEN {
        return Err(FieldError::new(
            "address",
            "too_long",
            format!("longer than {MAX_ADDRESS_LEN} bytes"),
        ));
    }
    Ok(normalize(raw))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn known(c: &str) -> bool {
        matches!(c, "email" | "sms")
    }

    #[test]
    fn email_addresses_match_whatever_their_case_and_display_name() {
        assert_eq!(normalize("Alice@Example.COM"), "alice@example.com");
        assert_eq!(normalize("Alice <Alice@Example.com>"), "alice@example.com");
    }

    #[test]
    fn other_addresses_match_exactly() {
        assert_eq!(normalize("+4915112345678"), "+4915112345678");
        assert_eq!(normalize("C0123ABC"), "C0123ABC");
        assert_eq!(
            normalize("https://user@Hooks.example/X"),
            "https://user@Hooks.example/X"
        );
    }

    #[test]
    fn preferences_come_back_sorted_and_canonical() {
        let p = Preferences {
            time_zone: Some("Europe/Paris".into()),
            quiet_hours: Some(WindowSpec {
                start: "22:00:00".into(),
                end: "07:00".into(),
            }),
            muted: vec!["sms".into(), "email".into(), "sms".into()],
            opted_out: vec![],
            high_priority_passes: false,
        }
        .validate(known)
        .unwrap();
        assert_eq!(p.muted, ["email", "sms"]);
        assert_eq!(p.quiet_hours.unwrap().start, "22:00");
    }

    #[test]
    fn an_unknown_time_zone_is_refused_naming_the_field() {
        let err = Preferences {
            time_zone: Some("Europe/Atlantis".into()),
            ..Preferences::default()
        }
        .validate(known)
        .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.code),
            ("time_zone", "unknown_time_zone")
        );
    }

    #[test]
    fn a_bad_window_is_refused_naming_its_part() {
        let err = Preferences {
            quiet_hours: Some(WindowSpec {
                start: "22:00".into(),
                end: "7am".into(),
            }),
            ..Preferences::default()
        }
        .validate(known)
        .unwrap_err();
        assert_eq!(err.field, "quiet_hours.end");
    }

    #[test]
    fn an_unknown_channel_is_refused_naming_its_index() {
        let err = Preferences {
            opted_out: vec!["email".into(), "fax".into()],
            ..Preferences::default()
        }
        .validate(known)
        .unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.code),
            ("opted_out[1]", "unknown_channel")
        );
    }

    #[test]
    fn high_priority_passes_unless_said_otherwise() {
        let p: Preferences = serde_json::from_str("{}").unwrap();
        assert!(p.high_priority_passes);
    }
}
