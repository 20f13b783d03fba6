use async_trait::async_trait;

use super::SlackWebhookConfig;
use crate::{
    BuildContext, BuildError, Channel, DeliveryError, FieldError, Message, Receipt, Secret,
    SendContext, http,
};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode, Uri};

/// A Slack incoming-webhook channel. The webhook fixes the Slack channel, so a notification's
/// `to` is only a label.
pub struct SlackWebhook {
    http: http::Client,
    /// The webhook URL (checked in `new`): it is the credential.
    url: Secret,
    /// The same URL parsed once, never shown.
    uri: Uri,
}

/// Debug never shows the URL, which is the webhook's credential.
impl std::fmt::Debug for SlackWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackWebhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SlackWebhook {
    /// Parses the URL and sets up the client.
    pub fn new(cfg: &SlackWebhookConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        let url = url::Url::parse(cfg.url.expose())
            .map_err(|_| BuildError::invalid("url", "not a URL"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(BuildError::invalid("url", "must be https://"));
        }
        Ok(Self {
            http: http::client(&ctx.timeouts)?,
            url: cfg.url.clone(),
            uri: http::uri(url.as_str()).map_err(|_| BuildError::invalid("url", "not a URL"))?,
        })
    }
}

/// Maps Slack's webhook answers: `200 ok`, or a plain-text code with its status.
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Receipt, DeliveryError> {
    let text = String::from_utf8_lossy(body).trim().to_owned();
    if status == StatusCode::OK && text == "ok" {
        return Ok(Receipt::default());
    }
    if status.is_success() {
        return Err(DeliveryError::transient(
            "bad_response",
            format!("{status} without Slack's `ok`: {}", http::snippet(body)),
        ));
    }
    // Slack answers every webhook error with a plain-text code; any other body (an HTML page
    // from a proxy) says nothing about the message.
    let is_slack_code = !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    if !is_slack_code {
        return Err(http::classify_unrecognized(status, headers, body));
    }
    let code = text;
    let reason = http::snippet(body);
    match (status.as_u16(), code.as_str()) {
        (429, _) => Err(DeliveryError::RateLimited {
            retry_after: http::retry_after(headers),
        }),
        (500..=599, _) => Err(DeliveryError::Transient {
            code,
            reason,
            retry_after: http::retry_after(headers),
        }),
        // The webhook itself is revoked, archived or refused: every message would fail the same
        // way until an operator fixes the URL, so hold the channel rather than fail them.
        (
            _,
            "invalid_token"
            | "no_service"
            | "no_team"
            | "channel_not_found"
            | "channel_is_archived",
        )
        | (410, _) => Err(DeliveryError::channel_fault(code, reason)),
        _ => Err(DeliveryError::permanent(code, reason)),
    }
}

#[async_trait]
impl Channel for SlackWebhook {
    fn kind(&self) -> &'static str {
        "slack_webhook"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        crate::slack::validate(msg)
    }

    async fn send(&self, msg: &Message, _ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let body = serde_json::to_vec(&crate::slack::payload(msg))
            .map_err(|e| DeliveryError::permanent("unserializable", e.to_string()))?;
        let request = http::Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.into())
            .map_err(http::unbuildable)?;
        http::send(&self.http, request, classify).await
    }
}
