//! Digests: a channel with a `digest_window` collects the notifications that carry the same
//! `digest_key` for the same recipient, and sends them as ONE message when the window ends (or
//! at once when `digest_max` items are in), rendered by the channel's `digest_template`, which
//! gets every item. Each collected notification then ends as the digest ended: `delivered`
//! with the digest's provider id, or `failed` with the digest's reason. Never dropped.
//!
//! The first item opens the digest; its window is fixed then (later items do not extend it).
//! The digest is a notification of its own (its id is in each item's `digest_id`), so it is
//! durable like any other, is claimed by exactly one dispatcher (one daemon on PostgreSQL),
//! and follows the channel's retry policy as one notification. A digest closes when it is
//! claimed: an item arriving after that opens the next one.

use std::time::Duration;

use serde_json::{Value, json};

use crate::model::{DigestItem, DigestJoin, RowChange, Rule, RuleEvent, State};
use crate::templates::Rendered;

/// Longest digest key accepted (bytes).
pub(crate) const MAX_KEY_LEN: usize = 255;
/// Most items one digest may be configured to hold.
pub(crate) const MAX_ITEMS: u32 = 1000;
/// Longest window a channel may collect for.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// A channel's digest settings (`digest_window`, `digest_max`, `digest_template`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestPolicy {
    pub window: Duration,
    pub max: u32,
    /// The template that renders the digest; a plain list when `None`.
    pub template: Option<String>,
}

/// Why a notification cannot join a digest; names the request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DigestError {
    #[error("must be 1 to {MAX_KEY_LEN} bytes")]
    KeyLength,
    #[error("channel {0:?} does not collect digests (set its digest_window)")]
    NotCollected(String),
}

/// The problems of a channel's digest settings, each naming its key.
pub(crate) fn problems(policy: &DigestPolicy) -> Vec<String> {
    let mut out = Vec::new();
    if policy.window.is_zero() || policy.window > MAX_WINDOW {
        out.push(format!(
            "digest_window: must be more than 0 and at most {}",
            humantime::format_duration(MAX_WINDOW)
        ));
    }
    if policy.max == 0 || policy.max > MAX_ITEMS {
        out.push(format!("digest_max: must be 1 to {MAX_ITEMS}"));
    }
    out
}

/// How a notification accepted at `now_ms` with `key` joins its channel's digest. `None`
/// without a key: it is sent on its own.
pub(crate) fn join(
    key: Option<&str>,
    channel: &str,
    policy: Option<&DigestPolicy>,
    vars: Option<&Value>,
    now_ms: i64,
) -> Result<Option<DigestJoin>, DigestError> {
    let Some(key) = key else { return Ok(None) };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(DigestError::KeyLength);
    }
    let policy = policy.ok_or_else(|| DigestError::NotCollected(channel.to_owned()))?;
    Ok(Some(DigestJoin {
        key: key.to_owned(),
        until_ms: now_ms.saturating_add(crate::clock::millis(policy.window)),
        max: policy.max,
        vars: vars.cloned(),
    }))
}

/// What the digest template is given: `digest_key`, `count` and `items`, each with its `id`,
/// `subject`, `body`, `html`, `data`, `vars` and `created_at` (RFC 3339), oldest first.
pub(crate) fn template_vars(key: &str, items: &[DigestItem]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "subject": i.subject,
                "body": i.body,
                "html": i.html,
                "data": i.data,
                "vars": i.vars,
                "created_at": crate::clock::rfc3339(i.created_at_ms),
            })
        })
        .collect();
    json!({"digest_key": key, "count": items.len(), "items": items})
}

/// The digest without a template: a subject that counts, and one line per item.
pub(crate) fn plain(key: &str, items: &[DigestItem]) -> Rendered {
    let lines: Vec<String> = items
        .iter()
        .map(|i| match (&i.subject, &i.body) {
            (Some(s), Some(b)) => format!("- {s}: {b}"),
            (Some(t), None) | (None, Some(t)) => format!("- {t}"),
            (None, None) => format!("- ({})", i.id),
        })
        .collect();
    Rendered {
        subject: Some(format!("{} notifications: {key}", items.len())),
        body: Some(lines.join("\n")),
        html: None,
        data: None,
    }
}

/// Why a digest cannot be sent; it ends `failed` with this code, and so do its items.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ComposeError {
    /// Every item was cancelled or expired before the digest was sent.
    #[error("every item of the digest was cancelled or expired before it was sent")]
    Empty,
    /// The digest template failed (missing, or a render error).
    #[error("{0}")]
    Template(String),
}

impl ComposeError {
    /// The reason code the digest and its items end with.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Empty => "digest_empty",
            Self::Template(_) => "digest_template",
        }
    }
}

/// The digest's content for a channel of `kind`: `template` rendered with [`template_vars`],
/// or the [`plain`] list without one.
pub(crate) fn compose(
    templates: &crate::templates::Templates,
    kind: &str,
    template: Option<&str>,
    key: &str,
    items: &[DigestItem],
) -> Result<Rendered, ComposeError> {
    if items.is_empty() {
        return Err(ComposeError::Empty);
    }
    match template {
        None => Ok(plain(key, items)),
        Some(name) => templates
            .render(name, kind, &template_vars(key, items))
            .map_err(|r| ComposeError::Template(r.message)),
    }
}

/// The state an item ends in when its digest ends in `digest`: `delivered` with it, else
/// `failed` (with the digest's reason). The stores' statement repeats this rule.
pub(crate) fn item_state(digest: State) -> State {
    match digest {
        State::Delivered => State::Delivered,
        _ => State::Failed,
    }
}

/// How a digest's waiting items end when the digest's completion makes `change`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemEnding {
    /// The state the digest ended in.
    pub digest: State,
    /// The items' state ([`item_state`]).
    pub state: State,
    pub provider_id: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
}

/// The items' ending when digest `digest_id` is delivered or ends; `None` when the change
/// leaves the digest live (a retry, a release, a failover): its items keep waiting.
pub(crate) fn ending(digest_id: &str, change: &RowChange) -> Option<ItemEnding> {
    match change {
        RowChange::Deliver { provider_id } => Some(ItemEnding {
            digest: State::Delivered,
            state: State::Delivered,
            provider_id: provider_id.clone(),
            code: None,
            error: None,
        }),
        RowChange::End { state, code, error } => Some(ItemEnding {
            digest: *state,
            state: item_state(*state),
            provider_id: None,
            code: Some(code.clone()),
            error: Some(format!("its digest {digest_id} ended {state}: {error}")),
        }),
        RowChange::Requeue { .. } | RowChange::Move { .. } => None,
    }
}

/// The change a caller's cancel makes to a digest, as its items see it: they end `failed`
/// with the reason `cancelled`.
pub(crate) fn cancelled() -> RowChange {
    RowChange::End {
        state: State::Cancelled,
        code: "cancelled".into(),
        error: "cancelled by a caller before it was sent".into(),
    }
}

/// The timeline line of an item collected into `digest_id`.
pub(crate) fn collected(item: &str, digest_id: &str, key: &str, now_ms: i64) -> RuleEvent {
    RuleEvent {
        notification: item.into(),
        at_ms: now_ms,
        rule: Rule::Digest,
        detail: format!("collected into digest {digest_id} (digest key {key:?})"),
    }
}

/// The timeline line of an item whose digest ended in `state` on attempt `attempt`.
pub(crate) fn ended(
    item: &str,
    digest_id: &str,
    state: State,
    attempt: u32,
    now_ms: i64,
) -> RuleEvent {
    RuleEvent {
        notification: item.into(),
        at_ms: now_ms,
        rule: Rule::Digest,
        detail: format!(
            "{} with digest {digest_id} (its attempt {attempt})",
            item_state(state)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> DigestPolicy {
        DigestPolicy {
            window: Duration::from_secs(600),
            max: 3,
            template: None,
        }
    }

    fn item(id: &str, subject: Option<&str>, body: Option<&str>) -> DigestItem {
        DigestItem {
            id: id.into(),
            subject: subject.map(Into::into),
            body: body.map(Into::into),
            html: None,
            data: None,
            vars: Some(json!({"n": 1})),
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn a_notification_opens_a_window_that_ends_window_after_it() {
        let j = join(Some("daily"), "mail", Some(&policy()), None, 1_000)
            .unwrap()
            .unwrap();
        assert_eq!((j.key.as_str(), j.until_ms, j.max), ("daily", 601_000, 3));
    }

    #[test]
    fn without_a_key_nothing_is_collected() {
        assert_eq!(join(None, "mail", Some(&policy()), None, 0), Ok(None));
    }

    #[test]
    fn a_key_on_a_channel_that_does_not_collect_is_refused() {
        assert_eq!(
            join(Some("k"), "mail", None, None, 0),
            Err(DigestError::NotCollected("mail".into()))
        );
    }

    #[test]
    fn an_empty_key_is_refused() {
        assert_eq!(
            join(Some(""), "mail", Some(&policy()), None, 0),
            Err(DigestError::KeyLength)
        );
    }

    #[test]
    fn the_template_gets_every_item_with_its_vars_and_creation_time() {
        let v = template_vars(
            "k",
            &[item("a", Some("S"), Some("B")), item("b", None, None)],
        );
        assert_eq!(v["count"], 2);
        assert_eq!(v["items"][0]["subject"], "S");
        assert_eq!(v["items"][0]["vars"]["n"], 1);
        assert_eq!(
            v["items"][1]["created_at"],
            crate::clock::rfc3339(1_700_000_000_000)
        );
        assert!(
            v["items"][1]["created_at"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T22:13:20")
        );
    }

    #[test]
    fn without_a_template_the_digest_is_a_list() {
        let r = plain(
            "k",
            &[item("a", Some("S"), Some("B")), item("b", None, Some("C"))],
        );
        assert_eq!(r.subject.as_deref(), Some("2 notifications: k"));
        assert_eq!(r.body.as_deref(), Some("- S: B\n- C"));
    }

    #[test]
    fn a_digest_without_items_is_not_composed() {
        let t = crate::templates::Templates::default();
        assert_eq!(
            compose(&t, "webhook", None, "k", &[]),
            Err(ComposeError::Empty)
        );
    }

    #[test]
    fn a_missing_digest_template_is_a_template_error() {
        let t = crate::templates::Templates::default();
        let e = compose(&t, "webhook", Some("nope"), "k", &[item("a", None, None)]).unwrap_err();
        assert_eq!(e.code(), "digest_template");
    }

    #[test]
    fn items_end_delivered_with_their_digest_and_failed_otherwise() {
        assert_eq!(item_state(State::Delivered), State::Delivered);
        for s in [State::Failed, State::Dead, State::Expired, State::Cancelled] {
            assert_eq!(item_state(s), State::Failed);
        }
    }

    #[test]
    fn a_failed_digest_fails_its_items_with_its_reason() {
        let change = RowChange::End {
            state: State::Dead,
            code: "http_503".into(),
            error: "down".into(),
        };
        let e = ending("d1", &change).unwrap();
        assert_eq!((e.digest, e.state), (State::Dead, State::Failed));
        assert_eq!(e.code.as_deref(), Some("http_503"));
        assert_eq!(e.error.as_deref(), Some("its digest d1 ended dead: down"));
    }

    #[test]
    fn a_delivered_digest_delivers_its_items_with_its_provider_id() {
        let change = RowChange::Deliver {
            provider_id: Some("p-9".into()),
        };
        let e = ending("d1", &change).unwrap();
        assert_eq!(e.state, State::Delivered);
        assert_eq!(e.provider_id.as_deref(), Some("p-9"));
    }

    #[test]
    fn a_retried_digest_leaves_its_items_waiting() {
        let change = RowChange::Requeue {
            run_at_ms: 5,
            refund: false,
            last: None,
        };
        assert_eq!(ending("d1", &change), None);
    }

    #[test]
    fn digest_settings_out_of_range_are_named() {
        let bad = DigestPolicy {
            window: Duration::ZERO,
            max: 0,
            template: None,
        };
        assert_eq!(problems(&bad).len(), 2);
        assert!(problems(&policy()).is_empty());
    }
}
