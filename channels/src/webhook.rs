//! The `webhook` channel: POSTs a JSON document to a configured URL, optionally signed.
//!
//! Request: `POST {url}` with `Content-Type: application/json`, `Idempotency-Key: <notification
//! id>` and, when `secret` is set, `Webhook-Timestamp: <unix seconds>` and
//! `Webhook-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`. A receiver
//! recomputes the HMAC over the exact bytes it received, compares in constant time, and rejects
//! timestamps more than 5 minutes away from its clock (replays).
//!
//! Answers: 2xx → delivered; 429 → rate limited; 408, 425, 5xx, timeouts and connection errors →
//! retry (honouring `Retry-After`); any other status → rejected.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::http::header::CONTENT_TYPE;
use crate::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use crate::{
    BuildContext, BuildError, Channel, DeliveryError, FieldError, Message, Receipt, Secret,
    SendContext, http,
};

/// `kind = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where every notification of this channel is POSTed (`http://` or `https://`).
    pub url: String,
    /// Shared secret for the `Webhook-Signature` header; unsigned when absent.
    pub secret: Option<Secret>,
    /// Extra headers sent with every request (e.g. a static `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

/// The document a webhook receiver gets.
#[derive(Debug, Serialize)]
struct Document<'a> {
    id: &'a str,
    channel: &'a str,
    to: &'a str,
    subject: Option<&'a str>,
    body: Option<&'a str>,
    html: Option<&'a str>,
    data: Option<&'a serde_json::Value>,
    attempt: u32,
    #[serde(serialize_with = "as_text")]
    created_at: humantime::Rfc3339Timestamp,
}

/// Writes a value's text straight into the document, without a `String` of its own.
fn as_text<S: serde::Serializer>(
    value: &humantime::Rfc3339Timestamp,
    out: S,
) -> Result<S::Ok, S::Error> {
    out.collect_str(value)
}

/// A channel that POSTs to one URL.
#[derive(Debug)]
pub struct Webhook {
    http: http::Client,
    /// The URL, parsed once: every request goes to it.
    uri: Uri,
    secret: Option<Secret>,
    headers: HeaderMap,
}

impl Webhook {
    /// Parses the URL and headers and sets up the client.
    pub fn new(cfg: &WebhookConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        let url = url::Url::parse(&cfg.url)
            .map_err(|e| BuildError::invalid("url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BuildError::invalid("url", "must be http:// or https://"));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BuildError::invalid("headers", format!("bad header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| BuildError::invalid("headers", format!("bad value for {name}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let uri = http::uri(url.as_str())
            .map_err(|e| BuildError::invalid("url", format!("not a URL: {e}")))?;
        Ok(Self {
            http: http::client(&ctx.timeouts)?,
            uri,
            secret: cfg.secret.clone(),
            headers,
        })
    }
}

/// `v1=` + hex HMAC-SHA256 over `"<timestamp>.<body>"`: the webhook signature scheme.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Channel for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        if msg.to.trim().is_empty() {
            return Err(FieldError::new(
                "to",
                "invalid_recipient",
                "must not be empty",
            ));
        }
        Ok(())
    }

    async fn send(&self, msg: &Message, ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let doc = Document {
            id: &msg.id,
            channel: &msg.channel,
            to: &msg.to,
            subject: msg.subject.as_deref(),
            body: msg.body.as_deref(),
            html: msg.html.as_deref(),
            data: msg.data.as_ref(),
            attempt: ctx.attempt,
            created_at: humantime::format_rfc3339_millis(msg.created_at),
        };
        let body = serde_json::to_vec(&doc)
            .map_err(|e| DeliveryError::permanent("unserializable", e.to_string()))?;
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 6);
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        headers.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.append(
            HeaderName::from_static("idempotency-key"),
            HeaderValue::from_str(&ctx.idempotency_key).map_err(http::unbuildable)?,
        );
        if let Some(secret) = &self.secret {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            headers.append(
                HeaderName::from_static("webhook-timestamp"),
                HeaderValue::from(ts),
            );
            headers.append(
                HeaderName::from_static("webhook-signature"),
                HeaderValue::try_from(signature(secret.expose().as_bytes(), ts, &body))
                    .map_err(http::unbuildable)?,
            );
        }
        let mut req = Request::new(body.into());
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        http::send(&self.http, req, classify).await
    }
}

/// Maps a receiver's answer: any 2xx delivered (its `X-Request-Id` as the provider id), else
/// the generic meaning of the status.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Receipt, DeliveryError> {
    if status.is_success() {
        return Ok(Receipt {
            provider_id: headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }
    Err(http::classify_status(status, headers, body))
}

#[cfg(test)]
mod tests;
