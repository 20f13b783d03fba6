//! The send path's digest step: a claimed digest gets its content from its items, rendered by
//! the channel's digest template ([`crate::rules::digest::compose`]), right before it is sent.
//! Composing at send time is what lets items keep arriving until the digest closes (its claim).

use crate::outbox::{Claimed, NotificationId, Outbox, Outcome, State};
use crate::registry::ChannelRuntime;
use crate::rules::digest;
use crate::templates::Templates;

/// How long a digest whose items could not be read waits before it is tried again (no attempt
/// spent: the provider was never called).
const UNREADABLE_ITEMS_RETRY_MS: i64 = 5_000;

/// Fills `row`'s content when it is a digest; `Err` is how it ends instead of being sent.
pub(super) async fn compose(
    outbox: &dyn Outbox,
    templates: &Templates,
    rt: &ChannelRuntime,
    row: &mut Claimed,
) -> Result<(), Outcome> {
    let Some(key) = row.digest_key.clone() else {
        return Ok(());
    };
    let items = outbox
        .digest_items(&NotificationId::from(row.message.id.as_str()))
        .await
        .map_err(|e| {
            tracing::warn!(notification_id = %row.message.id, error = %e,
            "Cannot read a digest's items; it is tried again shortly.");
            Outcome::Retry {
                run_at_ms: crate::clock::now_ms() + UNREADABLE_ITEMS_RETRY_MS,
                refund_attempt: true,
                code: "digest_items_unreadable".into(),
                error: e.to_string(),
            }
        })?;
    let template = rt.policy.digest_template.as_deref();
    let fail = |code: &str, error: String| Outcome::Finish {
        state: State::Failed,
        code: code.into(),
        error,
        fallback: false,
    };
    let rendered = digest::compose(templates, rt.kind, template, &key, &items)
        .map_err(|e| fail(e.code(), e.to_string()))?;
    row.message.subject = rendered.subject;
    row.message.body = rendered.body;
    row.message.html = rendered.html;
    row.message.data = rendered.data;
    rt.channel
        .validate(&row.message)
        .map_err(|e| fail(e.code, format!("the digest's {}: {}", e.field, e.message)))?;
    tracing::debug!(notification_id = %row.message.id, items = items.len(), "Composed a digest.");
    Ok(())
}
