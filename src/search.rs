//! A history search as callers write it (the API's query string, `notifyd list`'s flags), and
//! its validation into a [`HistoryQuery`]. Every refusal names the parameter at fault.

use notifyd_channels::FieldError;

use crate::outbox::{
    DEFAULT_PAGE, HistoryCursor, HistoryFilter, HistoryQuery, MAX_PAGE, MAX_WALK, Priority, State,
};
use crate::submission::parse_time;

/// The parameters a search takes, as `(name, what it is)`: for documentation and the OpenAPI
/// document.
pub(crate) const PARAMETERS: &[(&str, &str)] = &[
    (
        "state",
        "queued, sending, delivered, failed, dead, cancelled or expired",
    ),
    ("channel", "the channel's name"),
    ("to", "the recipient, exactly"),
    ("priority", "high, normal or low"),
    ("created_after", "RFC 3339, inclusive"),
    ("created_before", "RFC 3339, exclusive"),
    ("updated_after", "RFC 3339, inclusive"),
    ("updated_before", "RFC 3339, exclusive"),
    (
        "fallback_of",
        "the id of the notification whose fallbacks to list",
    ),
    (
        "subject",
        "text the subject contains (case-insensitive for ASCII)",
    ),
    ("limit", "1 to 500, default 50"),
    ("cursor", "the `next` of the previous page"),
];

/// Builds a query from `name=value` pairs. Empty values count as absent (a form's blank field);
/// an unknown or repeated name is refused.
pub(crate) fn parse<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<HistoryQuery, FieldError> {
    let mut q = HistoryQuery {
        filter: HistoryFilter::default(),
        after: None,
        limit: DEFAULT_PAGE,
        max_walk: MAX_WALK,
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        let Some(known) = PARAMETERS.iter().map(|(n, _)| *n).find(|n| *n == name) else {
            let names: Vec<&str> = PARAMETERS.iter().map(|(n, _)| *n).collect();
            return Err(FieldError::new(
                name,
                "unknown_parameter",
                format!("unknown parameter; use {}", names.join(", ")),
            ));
        };
        if seen.contains(&known) {
            return Err(FieldError::new(
                name,
                "repeated_parameter",
                "give this parameter once",
            ));
        }
        seen.push(known);
        if value.is_empty() {
            continue;
        }
        let f = &mut q.filter;
        match known {
            "state" => f.state = Some(value.parse::<State>().map_err(|e| invalid(name, e))?),
            "channel" => f.channel = Some(value.to_owned()),
            "to" => f.recipient = Some(value.to_owned()),
            "priority" => {
                f.priority = Some(value.parse::<Priority>().map_err(|e| invalid(name, e))?)
            }
            "created_after" => f.created_after_ms = Some(parse_time(name, value)?),
            "created_before" => f.created_before_ms = Some(parse_time(name, value)?),
            "updated_after" => f.updated_after_ms = Some(parse_time(name, value)?),
            "updated_before" => f.updated_before_ms = Some(parse_time(name, value)?),
            "fallback_of" => f.fallback_of = Some(value.to_owned()),
            "subject" => f.subject_contains = Some(value.to_owned()),
            "limit" => {
                q.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            name,
                            format!("{value:?} is not a number from 1 to {MAX_PAGE}"),
                        )
                    })?;
            }
            "cursor" => q.after = Some(HistoryCursor::decode(value).map_err(|e| invalid(name, e))?),
            _ => {}
        }
    }
    Ok(q)
}

fn invalid(name: &str, why: impl ToString) -> FieldError {
    FieldError::new(name, "invalid_parameter", why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_parameters_is_the_newest_default_page() {
        let q = parse([]).unwrap();
        assert_eq!(q.filter, HistoryFilter::default());
        assert_eq!(q.after, None);
        assert_eq!(q.limit, DEFAULT_PAGE);
    }

    #[test]
    fn every_filter_is_read_into_the_query() {
        let cursor = HistoryCursor {
            created_at_ms: 5,
            id: "abc".into(),
        };
        let encoded = cursor.encode();
        let q = parse([
            ("state", "dead"),
            ("channel", "sms"),
            ("to", "+15551234567"),
            ("priority", "high"),
            ("created_after", "2026-12-01T00:00:00Z"),
            ("created_before", "2026-12-01T00:00:01Z"),
            ("updated_after", "2026-12-01T00:00:00.500Z"),
            ("updated_before", ""),
            ("fallback_of", "parent"),
            ("subject", "Order"),
            ("limit", "500"),
            ("cursor", encoded.as_str()),
        ])
        .unwrap();
        assert_eq!(
            q.filter,
            HistoryFilter {
                state: Some(State::Dead),
                channel: Some("sms".into()),
                recipient: Some("+15551234567".into()),
                priority: Some(Priority::High),
                created_after_ms: Some(1_796_083_200_000),
                created_before_ms: Some(1_796_083_201_000),
                updated_after_ms: Some(1_796_083_200_500),
                updated_before_ms: None,
                fallback_of: Some("parent".into()),
                subject_contains: Some("Order".into()),
            }
        );
        assert_eq!(q.limit, 500);
        assert_eq!(q.after, Some(cursor));
    }

    fn refused(pairs: &[(&str, &str)]) -> FieldError {
        parse(pairs.iter().copied()).unwrap_err()
    }

    #[test]
    fn a_bad_value_is_refused_naming_its_parameter() {
        for (name, value) in [
            ("state", "lost"),
            ("priority", "urgent"),
            ("created_after", "yesterday"),
            ("updated_before", "2026-13-01T00:00:00Z"),
            ("limit", "0"),
            ("limit", "501"),
            ("limit", "ten"),
            ("cursor", "garbage"),
        ] {
            let r = refused(&[(name, value)]);
            assert_eq!(r.field, name, "{value}");
            assert!(!r.message.is_empty());
        }
    }

    #[test]
    fn an_unknown_or_repeated_parameter_is_refused() {
        let r = refused(&[("recipient", "a")]);
        assert_eq!(
            (r.field.as_str(), r.code),
            ("recipient", "unknown_parameter")
        );
        let r = refused(&[("state", "dead"), ("state", "failed")]);
        assert_eq!((r.field.as_str(), r.code), ("state", "repeated_parameter"));
    }
}

/// `notifyd list` flags: the API's parameters, plus `--json`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct ListArgs {
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub channel: Option<String>,
    /// The recipient, exactly.
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub priority: Option<String>,
    /// RFC 3339, inclusive.
    #[arg(long)]
    pub created_after: Option<String>,
    /// RFC 3339, exclusive.
    #[arg(long)]
    pub created_before: Option<String>,
    #[arg(long)]
    pub updated_after: Option<String>,
    #[arg(long)]
    pub updated_before: Option<String>,
    /// The fallbacks of this notification id.
    #[arg(long)]
    pub fallback_of: Option<String>,
    /// Text the subject contains.
    #[arg(long)]
    pub subject: Option<String>,
    /// 1 to 500.
    #[arg(long)]
    pub limit: Option<String>,
    /// The `next` of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Print the page as the API's JSON.
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    /// The flags given, as the API's `name=value` pairs.
    pub(crate) fn pairs(&self) -> Vec<(&str, &str)> {
        [
            ("state", &self.state),
            ("channel", &self.channel),
            ("to", &self.to),
            ("priority", &self.priority),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
            ("updated_after", &self.updated_after),
            ("updated_before", &self.updated_before),
            ("fallback_of", &self.fallback_of),
            ("subject", &self.subject),
            ("limit", &self.limit),
            ("cursor", &self.cursor),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
        .collect()
    }
}

/// A page as a text table, one notification a line, then the cursor of the next page.
pub(crate) fn table(page: &crate::outbox::HistoryPage) -> String {
    use std::fmt::Write;
    let time = |ms: i64| {
        crate::clock::rfc3339(ms)
            .as_str()
            .map(|s| s.get(..19).unwrap_or(s).replace('T', " "))
            .unwrap_or_default()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<19}  {:<36}  {:<12}  {:<9}  {:>3}  {:<28}  SUBJECT",
        "CREATED (UTC)", "ID", "CHANNEL", "STATE", "TRY", "TO"
    );
    for i in &page.items {
        let _ = writeln!(
            out,
            "{:<19}  {:<36}  {:<12}  {:<9}  {:>3}  {:<28}  {}",
            time(i.created_at_ms),
            i.id,
            clip(&i.channel, 12),
            i.state.as_str(),
            i.attempts,
            clip(&i.to, 28),
            clip(i.subject.as_deref().unwrap_or(""), 40)
        );
    }
    match &page.next {
        Some(next) => {
            let _ = writeln!(out, "next: --cursor {}", next.encode());
        }
        None => {
            let _ = writeln!(out, "({} shown, no more)", page.items.len());
        }
    }
    out
}

/// `s` cut to `n` characters, marking the cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}
