use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::{HeaderMap, StatusCode, Uri};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use web_push_native::p256;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;

use super::WebpushConfig;
use crate::push::MAX_PAYLOAD;
use crate::{
    BuildContext, BuildError, Channel, DeliveryError, FieldError, Message, Receipt, SendContext,
    http,
};

/// How long a VAPID token is valid (RFC 8292 allows up to 24 h).
const JWT_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// aes128gcm adds a 86-byte header, a 16-byte tag and a delimiter to the plaintext.
const ENCRYPTION_OVERHEAD: usize = 86 + 16 + 1;

/// A browser's push subscription, as the Push API gives it.
#[derive(Debug, Deserialize)]
struct Subscription {
    endpoint: String,
    keys: SubscriptionKeys,
}

#[derive(Debug, Deserialize)]
struct SubscriptionKeys {
    p256dh: String,
    auth: String,
}

/// A subscription checked and decoded.
struct Target {
    endpoint: url::Url,
    audience: String,
    public: p256::PublicKey,
    auth: web_push_native::Auth,
}

fn decode_b64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

fn parse_target(to: &str) -> Result<Target, FieldError> {
    let bad = |m: &str| FieldError::new("to", "invalid_recipient", m.to_owned());
    let sub: Subscription =
        serde_json::from_str(to).map_err(|e| bad(&format!("not a push subscription JSON: {e}")))?;
    let endpoint = url::Url::parse(&sub.endpoint).map_err(|_| bad("endpoint is not a URL"))?;
    let loopback = matches!(
        endpoint.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]")
    );
    if endpoint.scheme() != "https" && !(endpoint.scheme() == "http" && loopback) {
        return Err(bad("endpoint must be https://"));
    }
    let public = decode_b64url(&sub.keys.p256dh)
        .filter(|k| k.len() == 65)
        .and_then(|k| p256::PublicKey::from_sec1_bytes(&k).ok())
        .ok_or_else(|| bad("keys.p256dh must be a 65-byte P-256 point, base64url"))?;
    let auth = decode_b64url(&sub.keys.auth)
        .filter(|a| a.len() == 16)
        .ok_or_else(|| bad("keys.auth must be 16 bytes, base64url"))?;
    let audience = endpoint.origin().ascii_serialization();
    Ok(Target {
        endpoint,
        audience,
        public,
        auth: web_push_native::Auth::clone_from_slice(&auth),
    })
}

/// The VAPID token's claims.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Claims {
    pub aud: String,
    pub exp: u64,
    pub sub: String,
}

/// The private scalar of a P-256 key in PKCS#8 or SEC1 DER: the 32-byte OCTET STRING right
/// after the ECPrivateKey version (`02 01 01 04 20`).
fn private_scalar(der: &[u8]) -> Option<[u8; 32]> {
    const MARK: [u8; 5] = [0x02, 0x01, 0x01, 0x04, 0x20];
    let at = der.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    der.get(at..at + 32)?.try_into().ok()
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()
}

/// A Web Push channel.
pub struct Webpush {
    http: http::Client,
    key: EncodingKey,
    /// The VAPID public key, uncompressed point, base64url (`k=`).
    public_key: String,
    subject: String,
    ttl: Duration,
    urgency: Option<&'static str>,
    /// VAPID tokens by audience (push service origin).
    tokens: Mutex<HashMap<String, (String, SystemTime)>>,
}

impl std::fmt::Debug for Webpush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webpush")
            .field("public_key", &self.public_key)
            .finish()
    }
}

impl Webpush {
    /// Reads the VAPID key and derives its public half. No network I/O.
    pub fn new(cfg: &WebpushConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        let pem = cfg.vapid_private_key.expose();
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| {
            BuildError::invalid(
                "vapid_private_key",
                format!(
                    "not a P-256 PKCS#8 PEM key ({e}); convert with `openssl pkcs8 -topk8 -nocrypt`"
                ),
            )
        })?;
        let secret = pem_der(pem)
            .and_then(|der| private_scalar(&der))
            .and_then(|s| p256::SecretKey::from_slice(&s).ok())
            .ok_or_else(|| {
                BuildError::invalid("vapid_private_key", "cannot read the P-256 private key")
            })?;
        let point = secret.public_key().as_affine().to_encoded_point(false);
        if !(cfg.subject.starts_with("mailto:") || cfg.subject.starts_with("https://")) {
            return Err(BuildError::invalid(
                "subject",
                "must be a mailto: or https:// URL",
            ));
        }
        Ok(Self {
            http: http::client(&ctx.timeouts)?,
            key,
            public_key: URL_SAFE_NO_PAD.encode(point.as_bytes()),
            subject: cfg.subject.clone(),
            ttl: cfg.ttl,
            urgency: cfg.urgency.map(|u| u.as_str()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// A VAPID token for this push service, reused until an hour before it expires.
    async fn vapid(&self, audience: &str) -> Result<String, DeliveryError> {
        let mut tokens = self.tokens.lock().await;
        let now = SystemTime::now();
        if let Some((jwt, expires)) = tokens.get(audience)
            && now + Duration::from_secs(3600) < *expires
        {
            return Ok(jwt.clone());
        }
        let exp = now + JWT_LIFETIME;
        let claims = Claims {
            aud: audience.to_owned(),
            exp: exp
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            sub: self.subject.clone(),
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)
            .map_err(|e| DeliveryError::channel_fault("vapid", e.to_string()))?;
        tokens.insert(audience.to_owned(), (jwt.clone(), exp));
        Ok(jwt)
    }

    fn plaintext(msg: &Message) -> Vec<u8> {
        serde_json::json!({"title": msg.subject, "body": msg.body, "data": msg.data, "id": msg.id})
            .to_string()
            .into_bytes()
    }
}

/// Maps a push service's answer.
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Receipt, DeliveryError> {
    if status.is_success() {
        let location = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        return Ok(Receipt {
            provider_id: location,
        });
    }
    let reason = http::snippet(body);
    Err(match status.as_u16() {
        404 | 410 => DeliveryError::invalid_recipient("subscription_gone", reason),
        413 => DeliveryError::permanent("payload_too_large", reason),
        401 | 403 => DeliveryError::channel_fault(format!("http_{}", status.as_u16()), reason),
        _ => return Err(http::classify_status(status, headers, body)),
    })
}

#[async_trait]
impl Channel for Webpush {
    fn kind(&self) -> &'static str {
        "webpush"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        parse_target(&msg.to)?;
        let size = Self::plaintext(msg).len() + ENCRYPTION_OVERHEAD;
        if size > MAX_PAYLOAD {
            return Err(FieldError::new(
                "body",
                "too_long",
                format!("the encrypted push would be {size} bytes; the limit is 4096"),
            ));
        }
        if let Some(topic) = msg.data.as_ref().and_then(|d| d.get("topic"))
            && !topic.as_str().is_some_and(|t| {
                t.len() <= 32
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
        {
            return Err(FieldError::new(
                "data",
                "invalid_field",
                "data.topic must be at most 32 URL-safe characters",
            ));
        }
        Ok(())
    }

    async fn send(&self, msg: &Message, _ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let target = parse_target(&msg.to)
            .map_err(|e| DeliveryError::invalid_recipient("invalid_subscription", e.message))?;
        let body = web_push_native::encrypt(Self::plaintext(msg), &target.public, &target.auth)
            .map_err(|e| DeliveryError::permanent("encryption", e.to_string()))?;
        let jwt = self.vapid(&target.audience).await?;
        let uri = Uri::try_from(target.endpoint.as_str()).map_err(http::unbuildable)?;
        let mut req = http::Request::post(uri)
            .header("ttl", self.ttl.as_secs().to_string())
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header(
                "authorization",
                format!("vapid t={jwt}, k={}", self.public_key),
            );
        if let Some(u) = self.urgency {
            req = req.header("urgency", u);
        }
        if let Some(topic) = msg
            .data
            .as_ref()
            .and_then(|d| d.get("topic"))
            .and_then(|t| t.as_str())
        {
            req = req.header("topic", topic);
        }
        let request = req.body(body.into()).map_err(http::unbuildable)?;
        http::send(&self.http, request, classify).await
    }
}
