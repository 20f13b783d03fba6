use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ApnsConfig, ApnsEnvironment};
use crate::push::MAX_PAYLOAD;
use crate::push::token::TokenCache;
use crate::{
    BuildContext, BuildError, Channel, DeliveryError, FieldError, Message, Receipt, Secret,
    SendContext, http,
};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};

/// Apple refuses provider tokens older than an hour; refresh at 50 minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// Keys of `data` that become headers, not payload.
const HEADER_KEYS: &[&str] = &[
    "collapse_id",
    "expiration",
    "priority",
    "push_type",
    "topic",
];

/// The provider token's claims.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Claims {
    pub iss: String,
    pub iat: u64,
}

/// An APNs channel; a notification's `to` is the device token (hex).
pub struct Apns {
    http: http::Client,
    base: String,
    key: EncodingKey,
    key_id: String,
    team_id: String,
    topic: String,
    tokens: TokenCache,
}

impl std::fmt::Debug for Apns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apns")
            .field("base", &self.base)
            .field("topic", &self.topic)
            .finish()
    }
}

impl Apns {
    /// Reads the key and sets up an HTTP/2 client. No network I/O.
    pub fn new(cfg: &ApnsConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        let key = EncodingKey::from_ec_pem(cfg.key.expose().as_bytes())
            .map_err(|e| BuildError::invalid("key", format!("not a P-256 .p8 key: {e}")))?;
        for (name, value) in [
            ("key_id", &cfg.key_id),
            ("team_id", &cfg.team_id),
            ("topic", &cfg.topic),
        ] {
            if value.trim().is_empty() {
                return Err(BuildError::invalid(name, "must not be empty"));
            }
        }
        let base = cfg
            .base_url
            .clone()
            .unwrap_or_else(|| match cfg.environment {
                ApnsEnvironment::Production => "https://api.push.apple.com".into(),
                ApnsEnvironment::Sandbox => "https://api.sandbox.push.apple.com".into(),
            });
        http::uri(&base).map_err(|e| BuildError::invalid("base_url", format!("not a URL: {e}")))?;
        // APNs speaks HTTP/2 only: by ALPN over TLS, with prior knowledge over plain TCP (a
        // local test server).
        Ok(Self {
            http: http::Client::new(&ctx.timeouts, http::Versions::Http2Only)?,
            base: base.trim_end_matches('/').to_owned(),
            key,
            key_id: cfg.key_id.clone(),
            team_id: cfg.team_id.clone(),
            topic: cfg.topic.clone(),
            tokens: TokenCache::default(),
        })
    }

    async fn new_token(&self) -> Result<(Secret, Duration), DeliveryError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims {
            iss: self.team_id.clone(),
            iat,
        };
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| DeliveryError::channel_fault("jwt", e.to_string()))?;
        Ok((Secret::new(jwt), TOKEN_LIFETIME))
    }

    /// The payload and the `data` keys that are headers.
    fn payload(msg: &Message) -> (Value, Map<String, Value>) {
        let mut aps = Map::new();
        if msg.subject.is_some() || msg.body.is_some() {
            let mut alert = Map::new();
            if let Some(t) = &msg.subject {
                alert.insert("title".into(), json!(t));
            }
            if let Some(b) = &msg.body {
                alert.insert("body".into(), json!(b));
            }
            aps.insert("alert".into(), Value::Object(alert));
        } else {
            aps.insert("content-available".into(), json!(1));
        }
        let mut custom = Map::new();
        let mut headers = Map::new();
        if let Some(Value::Object(data)) = &msg.data {
            for (k, v) in data {
                if k == "aps" {
                    if let Value::Object(extra) = v {
                        aps.extend(extra.clone());
                    }
                } else if HEADER_KEYS.contains(&k.as_str()) {
                    headers.insert(k.clone(), v.clone());
                } else {
                    custom.insert(k.clone(), v.clone());
                }
            }
        }
        custom.insert("aps".into(), Value::Object(aps));
        (Value::Object(custom), headers)
    }

    async fn post(
        &self,
        token: &Secret,
        msg: &Message,
        body: &[u8],
        headers: &Map<String, Value>,
    ) -> Result<http::Answer, DeliveryError> {
        let alert = msg.subject.is_some() || msg.body.is_some();
        let text = |k: &str| {
            headers.get(k).map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
        };
        let uri = Uri::try_from(format!("{}/3/device/{}", self.base, msg.to))
            .map_err(http::unbuildable)?;
        let mut req = http::Request::post(uri)
            .header("authorization", format!("bearer {}", token.expose()))
            .header(
                "apns-topic",
                text("topic").unwrap_or_else(|| self.topic.clone()),
            )
            .header(
                "apns-push-type",
                text("push_type")
                    .unwrap_or_else(|| if alert { "alert" } else { "background" }.into()),
            )
            .header(
                "apns-priority",
                text("priority").unwrap_or_else(|| if alert { "10" } else { "5" }.into()),
            )
            .header("content-type", "application/json");
        // Without the header APNs stores the push and retries delivery while the device is
        // offline; `0` (try once, never store) only when the notification asks for it.
        if let Some(e) = text("expiration") {
            req = req.header("apns-expiration", e);
        }
        if let Some(c) = text("collapse_id") {
            req = req.header("apns-collapse-id", c);
        }
        if let Some(id) = apns_id(&msg.id) {
            req = req.header("apns-id", id);
        }
        let request = req
            .body(Bytes::copy_from_slice(body))
            .map_err(http::unbuildable)?;
        http::exchange(&self.http, request).await
    }
}

/// The `apns-id` for a notification: its id when it is a UUID (or 32 hex digits, as ids made by
/// a plain SQL insert are), so Apple's logs and ours name the same push.
pub(super) fn apns_id(id: &str) -> Option<String> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    // APNs wants the canonical form: lowercase 8-4-4-4-12.
    Some(
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
        .to_ascii_lowercase(),
    )
}

#[derive(Deserialize)]
struct Reason {
    reason: String,
}

fn reason(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Reason>(body)
        .ok()
        .map(|r| r.reason)
}

/// Whether Apple refused our provider token as expired or invalid: one refresh may help.
fn token_refused(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::FORBIDDEN
        && matches!(
            reason(body).as_deref(),
            Some("ExpiredProviderToken" | "InvalidProviderToken")
        )
}

/// Maps an APNs answer: `200` with `apns-id`, else `{"reason"}` with the status.
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Receipt, DeliveryError> {
    if status.is_success() {
        let id = headers
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        return Ok(Receipt { provider_id: id });
    }
    // APNs always explains an error with `{"reason"}`; anything else came from something else.
    let Some(code) = reason(body) else {
        return Err(http::classify_unrecognized(status, headers, body));
    };
    let text = format!("APNs: {code}");
    Err(match (status.as_u16(), code.as_str()) {
        (_, "BadDeviceToken" | "Unregistered" | "DeviceTokenNotForTopic" | "ExpiredToken")
        | (410, _) => DeliveryError::invalid_recipient(code, text),
        // `data.topic` overrides the topic per notification, so a refused topic is this
        // notification's fault, not the channel's: holding the channel would stall the rest.
        (_, "TopicDisallowed" | "BadTopic" | "MissingTopic") => {
            DeliveryError::permanent(code, text)
        }
        (_, "BadCertificate" | "BadCertificateEnvironment") | (403, _) => {
            DeliveryError::channel_fault(code, text)
        }
        (429, _) => DeliveryError::RateLimited {
            retry_after: http::retry_after(headers),
        },
        // APNs closed an idle connection: a new one (the pool makes it) and a retry deliver.
        (_, "IdleTimeout") | (500..=599, _) => DeliveryError::Transient {
            code,
            reason: text,
            retry_after: http::retry_after(headers),
        },
        _ => DeliveryError::permanent(code, text),
    })
}

#[async_trait]
impl Channel for Apns {
    fn kind(&self) -> &'static str {
        "apns"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        if msg.to.len() < 64 || msg.to.len() > 200 || !msg.to.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(FieldError::new(
                "to",
                "invalid_recipient",
                "an APNs device token is 64 or more hex digits",
            ));
        }
        if msg.data.as_ref().is_some_and(|d| !d.is_object()) {
            return Err(FieldError::new(
                "data",
                "invalid_field",
                "must be an object",
            ));
        }
        let size = Self::payload(msg).0.to_string().len();
        if size > MAX_PAYLOAD {
            return Err(FieldError::new(
                "body",
                "too_long",
                format!("the payload is {size} bytes; APNs takes 4096"),
            ));
        }
        Ok(())
    }

    async fn send(&self, msg: &Message, _ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let (payload, headers) = Self::payload(msg);
        let body = payload.to_string().into_bytes();
        let token = self
            .tokens
            .get(Duration::ZERO, None, || self.new_token())
            .await?;
        let answer = self.post(&token, msg, &body, &headers).await?;
        if token_refused(answer.status, &answer.body) {
            // A clock skew or a rotated key: make a new token once and try once more.
            let fresh = self
                .tokens
                .get(Duration::ZERO, Some(&token), || self.new_token())
                .await?;
            return self
                .post(&fresh, msg, &body, &headers)
                .await?
                .classify(classify);
        }
        answer.classify(classify)
    }
}
