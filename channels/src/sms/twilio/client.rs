use async_trait::async_trait;
use serde::Deserialize;

use super::TwilioConfig;
use crate::sms::segments::is_e164;
use crate::{
    BuildContext, BuildError, Channel, DeliveryError, FieldError, Message, Receipt, Secret,
    SendContext, http,
};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode, Uri};

/// A Twilio SMS channel.
#[derive(Debug)]
pub struct Twilio {
    http: http::Client,
    uri: Uri,
    user: String,
    password: Secret,
    sender: (&'static str, String),
    status_callback: Option<String>,
    max_segments: u32,
}

impl Twilio {
    /// Checks the account SID, credentials and sender; sets up the client.
    pub fn new(cfg: &TwilioConfig, ctx: &BuildContext) -> Result<Self, BuildError> {
        let sid = &cfg.account_sid;
        if !(sid.len() == 34
            && sid.starts_with("AC")
            && sid[2..].chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(BuildError::invalid(
                "account_sid",
                "must be AC followed by 32 hex digits",
            ));
        }
        let (user, password) = match (&cfg.auth_token, &cfg.api_key_sid, &cfg.api_key_secret) {
            (Some(token), None, None) => (sid.clone(), token.clone()),
            (None, Some(key), Some(secret)) => (key.clone(), secret.clone()),
            _ => {
                return Err(BuildError::invalid(
                    "auth_token",
                    "give auth_token, or api_key_sid with api_key_secret",
                ));
            }
        };
        let sender = match (&cfg.from, &cfg.messaging_service_sid) {
            (Some(from), None) if is_e164(from) => ("From", from.clone()),
            (Some(_), None) => return Err(BuildError::invalid("from", "must be an E.164 number")),
            (None, Some(service)) => ("MessagingServiceSid", service.clone()),
            _ => {
                return Err(BuildError::invalid(
                    "from",
                    "give exactly one of from or messaging_service_sid",
                ));
            }
        };
        let base = url::Url::parse(&cfg.base_url)
            .map_err(|e| BuildError::invalid("base_url", format!("not a URL: {e}")))?;
        let uri = http::uri(&format!(
            "{}/2010-04-01/Accounts/{sid}/Messages.json",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|e| BuildError::invalid("base_url", format!("not a URL: {e}")))?;
        Ok(Self {
            http: http::client(&ctx.timeouts)?,
            uri,
            user,
            password,
            sender,
            status_callback: cfg.status_callback.clone(),
            max_segments: cfg.max_segments,
        })
    }
}

/// The Message resource Twilio returns on success (only what we use).
#[derive(Debug, Deserialize)]
struct MessageResource {
    sid: String,
}

/// Twilio's error body: `{"code", "message", "more_info", "status"}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<u32>,
    message: Option<String>,
}

/// Maps every Twilio answer into our types.
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Receipt, DeliveryError> {
    if status.is_success() {
        return match serde_json::from_slice::<MessageResource>(body) {
            Ok(m) => Ok(Receipt {
                provider_id: Some(m.sid),
            }),
            // Accepted, but we cannot tell which message it is: retrying is safer than guessing.
            Err(e) => Err(DeliveryError::transient(
                "bad_response",
                format!("{status} without a readable message sid: {e}"),
            )),
        };
    }
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    // Twilio answers every error with its JSON error and a code; a body without one (an HTML
    // page from a proxy or a wrong base URL) says nothing about the message.
    let Some(code) = parsed.as_ref().and_then(|e| e.code) else {
        return Err(http::classify_unrecognized(status, headers, body));
    };
    let reason = parsed
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| http::snippet(body));
    let code_text = code.to_string();
    match (status.as_u16(), Some(code)) {
        (_, Some(21211 | 21610 | 21612 | 21614 | 21408)) => {
            Err(DeliveryError::invalid_recipient(code_text, reason))
        }
        // Our own account or sender is wrong: every message would fail the same way.
        (_, Some(20003 | 20404 | 21606)) | (401 | 403 | 404, _) => {
            Err(DeliveryError::channel_fault(code_text, reason))
        }
        (429, _) | (_, Some(20429)) => Err(DeliveryError::RateLimited {
            retry_after: http::retry_after(headers),
        }),
        (500..=599, _) => Err(DeliveryError::Transient {
            code: code_text,
            reason,
            retry_after: http::retry_after(headers),
        }),
        _ => Err(DeliveryError::permanent(code_text, reason)),
    }
}

#[async_trait]
impl Channel for Twilio {
    fn kind(&self) -> &'static str {
        "twilio"
    }

    fn validate(&self, msg: &Message) -> Result<(), FieldError> {
        crate::sms::validate(msg, self.max_segments)
    }

    async fn send(&self, msg: &Message, _ctx: &SendContext) -> Result<Receipt, DeliveryError> {
        let mut form = vec![
            ("To", msg.to.as_str()),
            (self.sender.0, self.sender.1.as_str()),
            ("Body", msg.body.as_deref().unwrap_or_default()),
        ];
        if let Some(cb) = &self.status_callback {
            form.push(("StatusCallback", cb.as_str()));
        }
        let request = http::Request::post(self.uri.clone())
            .header(
                AUTHORIZATION,
                http::basic(&self.user, self.password.expose())?,
            )
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(http::form(&form))
            .map_err(http::unbuildable)?;
        http::send(&self.http, request, classify).await
    }
}
