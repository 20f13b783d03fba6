use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::FcmConfig;
use crate::push::MAX_PAYLOAD;
use crate::push::token::TokenCache;
use crate::{
    BuildContext, BuildError, Channel, DeliveryError, FieldError, Message, Receipt, Secret,
    SendContext, http,
};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode, Uri};

/// The OAuth scope FCM sends need.
pub(super) const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Refresh the access token this long before Google says it expires.
const MARGIN: Duration = Duration::from_secs(300);
/// Keys of `Message.data` that map onto the FCM message.
const DATA_KEYS: &[&str] = &["data", "android", "apns", "webpush", "fcm_options"];

/// The parts of a service-account JSON file we use.
#[derive(Deserialize)]
struct ServiceAccount {
    project_id: Option<String>,
    private_key_id: String,
    private_key: String,
    client_email: String,
    token_uri: String,
}

/// The JWT-bearer assertion's claims.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Claims {
    pub iss: String,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// An FCM channel; a notification's `to` is the device registration token.
pub struct Fcm {
    http: http::Client,
    send_url: Uri,
    token_url: String,
    client_email: String,
    key_id: String,
    key: EncodingKey,
    tokens: TokenCache,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm")
            .field("send_url", &self.send_url)
            .finish()
    }
}

impl Fcm {
    /// Reads the service account and its key; sets up the client. No network I/O.
    pub fn new(cfg: &FcmConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        let account: ServiceAccount =
            serde_json::from_str(cfg.service_account.expose()).map_err(|e| {
                BuildError::invalid(
                    "service_account",
                    format!("not a service-account JSON: {e}"),
                )
            })?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|e| {
            BuildError::invalid("service_account", format!("unusable private_key: {e}"))
        })?;
        let project = cfg
            .project_id
            .clone()
            .or(account.project_id)
            .ok_or_else(|| {
                BuildError::invalid("project_id", "not in the service account; give project_id")
            })?;
        let base = url::Url::parse(&cfg.base_url)
            .map_err(|e| BuildError::invalid("base_url", format!("not a URL: {e}")))?;
        let send_url = http::uri(&format!(
            "{}/v1/projects/{project}/messages:send",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|e| BuildError::invalid("base_url", format!("not a URL: {e}")))?;
        Ok(Self {
            http: http::client(&ctx.timeouts)?,
            send_url,
            token_url: cfg.token_url.clone().unwrap_or(account.token_uri),
            client_email: account.client_email,
            key_id: account.private_key_id,
            key,
            tokens: TokenCache::default(),
        })
    }

    async fn fetch_token(&self) -> Result<(Secret, Duration), DeliveryError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            iss: self.client_email.clone(),
            scope: SCOPE.into(),
            aud: self.token_url.clone(),
            iat: now,
            exp: now + 3600,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key_id.clone());
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| DeliveryError::channel_fault("jwt", e.to_string()))?;
        let token_url = http::uri(&self.token_url).map_err(|e| {
            DeliveryError::transient("transport", format!("builder error: token_url: {e}"))
        })?;
        let request = http::Request::post(token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(http::form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ]))
            .map_err(http::unbuildable)?;
        let http::Answer { status, body, .. } = http::exchange(&self.http, request).await?;
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            expires_in: u64,
        }
        #[derive(Deserialize)]
        struct TokenError {
            error: String,
            error_description: Option<String>,
        }
        if status.is_success() {
            let t: Token = serde_json::from_slice(&body).map_err(|e| {
                DeliveryError::transient("bad_response", format!("token answer: {e}"))
            })?;
            return Ok((
                Secret::new(t.access_token),
                Duration::from_secs(t.expires_in),
            ));
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(DeliveryError::transient(
                format!("token_http_{}", status.as_u16()),
                http::snippet(&body),
            ));
        }
        // 400 invalid_grant / invalid_scope, 401: our service account is refused.
        let (code, reason) = match serde_json::from_slice::<TokenError>(&body) {
            Ok(e) => (e.error, e.error_description.unwrap_or_default()),
            Err(_) => (
                format!("token_http_{}", status.as_u16()),
                http::snippet(&body),
            ),
        };
        Err(DeliveryError::channel_fault(code, reason))
    }

    fn payload(msg: &Message) -> Value {
        let mut message = Map::new();
        message.insert("token".into(), json!(msg.to));
        if msg.subject.is_some() || msg.body.is_some() {
            let mut n = Map::new();
            if let Some(t) = &msg.subject {
                n.insert("title".into(), json!(t));
            }
            if let Some(b) = &msg.body {
                n.insert("body".into(), json!(b));
            }
            message.insert("notification".into(), Value::Object(n));
        }
        if let Some(Value::Object(data)) = &msg.data {
            for key in DATA_KEYS {
                if let Some(v) = data.get(*key) {
                    message.insert((*key).to_owned(), v.clone());
                }
            }
        }
        json!({ "message": message })
    }

    async fn post(&self, token: &Secret, body: &[u8]) -> Result<http::Answer, DeliveryError> {
        let request = http::Request::post(self.send_url.clone())
            .header(AUTHORIZATION, http::bearer(token.expose())?)
            .header(CONTENT_TYPE, "application/json")
            .body(Bytes::copy_from_slice(body))
            .map_err(http::unbuildable)?;
        http::exchange(&self.http, request).await
    }
}

#[derive(Deserialize)]
struct RpcStatus {
    error: RpcError,
}

#[derive(Deserialize)]
struct RpcError {
    message: Option<String>,
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

/// Whether a 401 means our access token expired (no `FcmError` detail), so one refresh may help.
fn token_expired(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::UNAUTHORIZED && fcm_error_code(body).is_none()
}

fn fcm_error_code(body: &[u8]) -> Option<String> {
    let parsed: RpcStatus = serde_json::from_slice(body).ok()?;
    parsed.error.details.iter().find_map(|d| {
        (d["@type"] == "type.googleapis.com/google.firebase.fcm.v1.FcmError")
            .then(|| d["errorCode"].as_str().map(str::to_owned))
            .flatten()
    })
}

/// Maps an FCM answer: `FcmError.errorCode` first, the HTTP status second.
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Receipt, DeliveryError> {
    if status.is_success() {
        #[derive(Deserialize)]
        struct Sent {
            name: String,
        }
        return serde_json::from_slice::<Sent>(body)
            .map(|s| Receipt {
                provider_id: Some(s.name),
            })
            .map_err(|e| {
                DeliveryError::transient(
                    "bad_response",
                    format!("{status} without a message name: {e}"),
                )
            });
    }
    let Some(rpc) = serde_json::from_slice::<RpcStatus>(body).ok() else {
        // Google always answers an error with a google.rpc.Status: this came from something else.
        return Err(http::classify_unrecognized(status, headers, body));
    };
    let reason = rpc
        .error
        .message
        .clone()
        .unwrap_or_else(|| http::snippet(body));
    let retry_after = http::retry_after(headers);
    let code = fcm_error_code(body)
        .or_else(|| rpc.error.status.clone())
        .unwrap_or_else(|| format!("http_{}", status.as_u16()));
    Err(match code.as_str() {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => DeliveryError::invalid_recipient(code, reason),
        "INVALID_ARGUMENT" if reason.to_ascii_lowercase().contains("registration token") => {
            DeliveryError::invalid_recipient(code, reason)
        }
        "THIRD_PARTY_AUTH_ERROR" | "UNAUTHENTICATED" | "PERMISSION_DENIED" => {
            DeliveryError::channel_fault(code, reason)
        }
        "QUOTA_EXCEEDED" | "RESOURCE_EXHAUSTED" => DeliveryError::RateLimited { retry_after },
        "UNAVAILABLE" | "INTERNAL" => DeliveryError::Transient {
            code,
            reason,
            retry_after,
        },
        _ => match status.as_u16() {
            401 | 403 => DeliveryError::channel_fault(code, reason),
            429 => DeliveryError::RateLimited { retry_after },
            500..=599 => DeliveryError::Transient {
                code,
                reason,
                retry_after,
            },
            _ => DeliveryError::permanent(code, reason),
        },
    })
}

#[async_trait]
impl Channel for Fcm {
    fn kind(&self) -> &'static str {
        "fcm"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        let token_ok = !msg.to.is_empty()
            && msg.to.len() <= 4096
            && msg
                .to
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-'));
        if !token_ok {
            return Err(FieldError::new(
                "to",
                "invalid_recipient",
                "not an FCM registration token",
            ));
        }
        if let Some(data) = &msg.data {
            let Some(map) = data.as_object() else {
                return Err(FieldError::new(
                    "data",
                    "invalid_field",
                    "must be an object",
                ));
            };
            if let Some(k) = map.keys().find(|k| !DATA_KEYS.contains(&k.as_str())) {
                return Err(FieldError::new(
                    "data",
                    "invalid_field",
                    format!("unknown key {k:?}; use data, android, apns, webpush or fcm_options"),
                ));
            }
            if let Some(d) = map.get("data")
                && !d
                    .as_object()
                    .is_some_and(|o| o.values().all(Value::is_string))
            {
                return Err(FieldError::new(
                    "data",
                    "invalid_field",
                    "data.data must map strings to strings",
                ));
            }
        }
        let size = Self::payload(msg).to_string().len();
        if size > MAX_PAYLOAD + 200 {
            return Err(FieldError::new(
                "body",
                "too_long",
                format!("the push payload is {size} bytes; FCM takes 4096"),
            ));
        }
        Ok(())
    }

    async fn send(&self, msg: &Message, _ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let body = serde_json::to_vec(&Self::payload(msg))
            .map_err(|e| DeliveryError::permanent("unserializable", e.to_string()))?;
        let token = self.tokens.get(MARGIN, None, || self.fetch_token()).await?;
        let answer = self.post(&token, &body).await?;
        if token_expired(answer.status, &answer.body) {
            // Our access token was refused before its time: refresh once and resend once.
            let fresh = self
                .tokens
                .get(MARGIN, Some(&token), || self.fetch_token())
                .await?;
            return self.post(&fresh, &body).await?.classify(classify);
        }
        answer.classify(classify)
    }
}
