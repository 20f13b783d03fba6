//! Slack channels: incoming webhooks (`slack_webhook`) and the Web API's `chat.postMessage`
//! (`slack`).

pub mod web;
pub mod webhook;

use serde_json::{Map, Value, json};

use crate::{FieldError, Message};

/// Slack's limit on `text`.
const MAX_TEXT: usize = 40_000;
/// Keys of `data` passed through to Slack as they are.
const PASSTHROUGH: &[&str] = &[
    "blocks",
    "attachments",
    "thread_ts",
    "reply_broadcast",
    "unfurl_links",
    "unfurl_media",
    "mrkdwn",
    "username",
    "icon_emoji",
    "icon_url",
];

/// The message text: the body, with the subject in bold above it when both are given.
fn text(msg: &Message) -> String {
    match (msg.subject.as_deref(), msg.body.as_deref()) {
        (Some(s), Some(b)) => format!("*{s}*\n{b}"),
        (Some(s), None) => s.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) => String::new(),
    }
}

/// The JSON payload both kinds send: `text`, plus Block Kit and other fields from `data`.
pub(crate) fn payload(msg: &Message) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("text".into(), json!(text(msg)));
    if let Some(Value::Object(data)) = &msg.data {
        for key in PASSTHROUGH {
            if let Some(v) = data.get(*key) {
                out.insert((*key).to_owned(), v.clone());
            }
        }
    }
    out
}

/// Content checks shared by both kinds.
pub(crate) fn validate(msg: &Message) -> Result<(), FieldError> {
    let has_blocks = msg
        .data
        .as_ref()
        .and_then(|d| d.get("blocks"))
        .is_some_and(|b| b.as_array().is_some_and(|a| !a.is_empty()));
    let text = text(msg);
    if text.trim().is_empty() && !has_blocks {
        return Err(FieldError::new(
            "body",
            "missing_content",
            "a Slack message needs a body, a subject or data.blocks",
        ));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(FieldError::new(
            "body",
            "too_long",
            format!("Slack takes at most {MAX_TEXT} characters"),
        ));
    }
    if let Some(blocks) = msg.data.as_ref().and_then(|d| d.get("blocks"))
        && !blocks.is_array()
    {
        return Err(FieldError::new(
            "data",
            "invalid_field",
            "data.blocks must be an array of Block Kit blocks",
        ));
    }
    Ok(())
}
