use async_trait::async_trait;
use serde::Deserialize;

use super::VonageConfig;
use crate::sms::segments::{Encoding, count};
use crate::{
    BuildContext, BuildError, Channel, DeliveryError, FieldError, Message, Receipt, Secret,
    SendContext, http,
};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode, Uri};

/// A Vonage SMS channel.
#[derive(Debug)]
pub struct Vonage {
    http: http::Client,
    uri: Uri,
    api_key: String,
    api_secret: Secret,
    from: String,
    callback: Option<String>,
    max_segments: u32,
}

impl Vonage {
    /// Checks the config and sets up the client.
    pub fn new(cfg: &VonageConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        if cfg.api_key.trim().is_empty() {
            return Err(BuildError::invalid("api_key", "must not be empty"));
        }
        if cfg.from.trim().is_empty() {
            return Err(BuildError::invalid("from", "must not be empty"));
        }
        let base = url::Url::parse(&cfg.base_url)
            .map_err(|e| BuildError::invalid("base_url", format!("not a URL: {e}")))?;
        let uri = http::uri(&format!("{}/sms/json", base.as_str().trim_end_matches('/')))
            .map_err(|e| BuildError::invalid("base_url", format!("not a URL: {e}")))?;
        Ok(Self {
            http: http::client(&ctx.timeouts)?,
            uri,
            api_key: cfg.api_key.clone(),
            api_secret: cfg.api_secret.clone(),
            from: cfg.from.trim_start_matches('+').to_owned(),
            callback: cfg.callback.clone(),
            max_segments: cfg.max_segments,
        })
    }
}

#[derive(Debug, Deserialize)]
struct Response {
    messages: Vec<MessageStatus>,
}

#[derive(Debug, Deserialize)]
struct MessageStatus {
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "error-text")]
    error_text: Option<String>,
}

/// Maps every Vonage answer into our types (the `x-errors` table of the SMS API spec).
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Receipt, DeliveryError> {
    // The SMS API answers 200 even for a refused message; another status came from a proxy or
    // a wrong base URL and says nothing about the message.
    if !status.is_success() {
        return Err(http::classify_unrecognized(status, headers, body));
    }
    let parsed: Response = serde_json::from_slice(body).map_err(|e| {
        DeliveryError::transient(
            "bad_response",
            format!("unreadable answer ({e}): {}", http::snippet(body)),
        )
    })?;
    // A long text is sent as several parts, each with its own status: all must succeed.
    let Some(first) = parsed.messages.first() else {
        return Err(DeliveryError::transient(
            "bad_response",
            "an answer with no messages",
        ));
    };
    if let Some(failed) = parsed.messages.iter().find(|m| m.status != "0") {
        let code = format!("vonage_{}", failed.status);
        let reason = failed.error_text.clone().unwrap_or_default();
        return Err(match failed.status.as_str() {
            "1" => DeliveryError::RateLimited { retry_after: None },
            "5" | "10" => DeliveryError::transient(code, reason),
            "7" | "33" => DeliveryError::invalid_recipient(code, reason),
            // Our account, credentials or sender: every message would fail the same way.
            "4" | "8" | "9" | "11" | "14" | "15" | "23" | "29" | "32" => {
                DeliveryError::channel_fault(code, reason)
            }
            _ => DeliveryError::permanent(code, reason),
        });
    }
    match &first.message_id {
        Some(id) => Ok(Receipt {
            provider_id: Some(id.clone()),
        }),
        None => Err(DeliveryError::transient(
            "bad_response",
            "status 0 without a message-id",
        )),
    }
}

#[async_trait]
impl Channel for Vonage {
    fn kind(&self) -> &'static str {
        "vonage"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        crate::sms::validate(msg, self.max_segments)
    }

    async fn send(&self, msg: &Message, ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let text = msg.body.as_deref().unwrap_or_default();
        let mut form = vec![
            ("api_key", self.api_key.as_str()),
            ("api_secret", self.api_secret.expose()),
            ("from", self.from.as_str()),
            ("to", msg.to.trim_start_matches('+')),
            ("text", text),
            ("client-ref", ctx.idempotency_key.as_str()),
        ];
        if count(text).encoding == Encoding::Ucs2 {
            form.push(("type", "unicode"));
        }
        if let Some(cb) = &self.callback {
            form.push(("callback", cb.as_str()));
        }
        let request = http::Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(http::form(&form))
            .map_err(http::unbuildable)?;
        http::send(&self.http, request, classify).await
    }
}
