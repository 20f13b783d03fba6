use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::SlackConfig;
use crate::{
    BuildContext, BuildError, Channel, DeliveryError, FieldError, Message, Receipt, Secret,
    SendContext, http,
};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode, Uri};

/// A Slack Web API channel; a notification's `to` is the Slack channel (id or name).
#[derive(Debug)]
pub struct Slack {
    http: http::Client,
    uri: Uri,
    token: Secret,
}

impl Slack {
    /// Checks the token's shape and sets up the client.
    pub fn new(cfg: &SlackConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        let t = cfg.token.expose();
        if !(t.starts_with("xoxb-") || t.starts_with("xoxp-")) {
            return Err(BuildError::invalid(
                "token",
                "must be a bot (xoxb-) or user (xoxp-) token",
            ));
        }
        let base = url::Url::parse(&cfg.base_url)
            .map_err(|e| BuildError::invalid("base_url", format!("not a URL: {e}")))?;
        let uri = http::uri(&format!(
            "{}/api/chat.postMessage",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|e| BuildError::invalid("base_url", format!("not a URL: {e}")))?;
        Ok(Self {
            http: http::client(&ctx.timeouts)?,
            uri,
            token: cfg.token.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    ok: bool,
    error: Option<String>,
    channel: Option<String>,
    ts: Option<String>,
}

/// Maps every `chat.postMessage` answer; `ok` decides, never the status alone.
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Receipt, DeliveryError> {
    if !status.is_success() {
        // Slack explains its errors with `{"ok": false, "error"}` (on 200 nearly always); any
        // other non-success body came from a proxy or a wrong base URL.
        return match serde_json::from_slice::<Answer>(body) {
            Ok(answer)
                if status.is_client_error()
                    && status != StatusCode::TOO_MANY_REQUESTS
                    && !answer.ok =>
            {
                Err(slack_error(answer.error, headers))
            }
            _ => Err(http::classify_unrecognized(status, headers, body)),
        };
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        DeliveryError::transient(
            "bad_response",
            format!("unreadable answer ({e}): {}", http::snippet(body)),
        )
    })?;
    if answer.ok {
        return match (answer.channel, answer.ts) {
            (Some(channel), Some(ts)) => Ok(Receipt {
                provider_id: Some(format!("{channel}:{ts}")),
            }),
            _ => Err(DeliveryError::transient(
                "bad_response",
                "ok without channel and ts",
            )),
        };
    }
    Err(slack_error(answer.error, headers))
}

/// Maps the `error` of an `ok: false` answer.
fn slack_error(error: Option<String>, headers: &HeaderMap) -> DeliveryError {
    let code = error.unwrap_or_else(|| "unknown_error".into());
    let reason = format!("chat.postMessage: {code}");
    match code.as_str() {
        "invalid_auth"
        | "not_authed"
        | "token_revoked"
        | "token_expired"
        | "account_inactive"
        | "missing_scope"
        | "no_permission"
        | "not_allowed_token_type"
        | "ekm_access_denied" => DeliveryError::channel_fault(code, reason),
        "channel_not_found" | "is_archived" | "not_in_channel" | "user_not_found" => {
            DeliveryError::invalid_recipient(code, reason)
        }
        "ratelimited" | "rate_limited" => DeliveryError::RateLimited {
            retry_after: http::retry_after(headers),
        },
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            DeliveryError::transient(code, reason)
        }
        _ => DeliveryError::permanent(code, reason),
    }
}

#[async_trait]
impl Channel for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        if msg.to.trim().is_empty() || msg.to.contains(char::is_whitespace) {
            return Err(FieldError::new(
                "to",
                "invalid_recipient",
                "a Slack channel id (C0123…) or name",
            ));
        }
        crate::slack::validate(msg)
    }

    async fn send(&self, msg: &Message, _ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let mut payload = crate::slack::payload(msg);
        payload.insert("channel".into(), Value::String(msg.to.clone()));
        let body = serde_json::to_vec(&payload)
            .map_err(|e| DeliveryError::permanent("unserializable", e.to_string()))?;
        let request = http::Request::post(self.uri.clone())
            .header(AUTHORIZATION, http::bearer(self.token.expose())?)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.into())
            .map_err(http::unbuildable)?;
        http::send(&self.http, request, classify).await
    }
}
