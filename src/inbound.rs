//! Delivery receipts from providers: verified before anything is believed, then normalized into
//! an [`InboundReceipt`].
//!
//! - Twilio status callbacks: `X-Twilio-Signature` = Base64(HMAC-SHA1(auth token, the URL as
//!   Twilio called it + each POST parameter's name and value, sorted by name)).
//! - Generic signed JSON (`{"provider_id", "status", "error_code"?}`): `Webhook-Timestamp` and
//!   `Webhook-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`, the scheme
//!   notifyd's own webhooks use; timestamps outside the tolerance are refused as replays.

use axum::http::HeaderMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use notifyd_channels::FieldError;
use sha1::Sha1;

use crate::config::ReceiptsConfig;
use crate::outbox::{InboundReceipt, ReceiptStatus};
use notifyd_channels::same_secret;

/// Why a receipt is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InboundError {
    /// Unsigned, wrongly signed or stale: nothing is stored (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Signed but unusable (422), naming the field.
    #[error(transparent)]
    Invalid(FieldError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> InboundError {
    InboundError::Invalid(FieldError::new(field, "invalid_field", message))
}

/// Twilio's request signature for `url` and form `params`.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A provider's status word, normalized.
pub(crate) fn normalize(word: &str) -> ReceiptStatus {
    match word.to_ascii_lowercase().as_str() {
        "delivered" | "read" => ReceiptStatus::Delivered,
        "undelivered" | "failed" | "rejected" | "expired" | "canceled" | "cancelled" => {
            ReceiptStatus::Failed
        }
        _ => ReceiptStatus::InProgress,
    }
}

/// The URL Twilio signed: the configured public URL with the query string of the request as it
/// arrived (which replaces one written in `url`, so a query is never appended twice); `url` as
/// written when the request has none.
fn signed_url(url: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => {
            let base = url.split_once('?').map_or(url, |(base, _)| base);
            format!("{base}?{q}")
        }
        _ => url.to_owned(),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Verifies a receipt request and turns it into our type. `query` is the request's query
/// string (part of what Twilio signs); `now` is Unix seconds.
pub(crate) fn verify_and_parse(
    config: &ReceiptsConfig,
    channel: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<InboundReceipt, InboundError> {
    match config {
        ReceiptsConfig::Twilio { auth_token, url } => {
            let signature = header(headers, "x-twilio-signature")
                .ok_or_else(|| InboundError::Unauthorized("missing X-Twilio-Signature".into()))?;
            let params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
            let full_url = signed_url(url, query);
            if !same_secret(
                signature,
                &twilio_signature(auth_token.expose(), &full_url, &params),
            ) {
                return Err(InboundError::Unauthorized(
                    "X-Twilio-Signature does not match".into(),
                ));
            }
            let get = |names: &[&str]| {
                params
                    .iter()
                    .find(|(k, v)| names.contains(&k.as_str()) && !v.is_empty())
                    .map(|(_, v)| v.clone())
            };
            let provider_id =
                get(&["MessageSid", "SmsSid"]).ok_or_else(|| invalid("MessageSid", "missing"))?;
            let word = get(&["MessageStatus", "SmsStatus"])
                .ok_or_else(|| invalid("MessageStatus", "missing"))?;
            Ok(InboundReceipt {
                channel: channel.into(),
                provider_id,
                status: normalize(&word),
                provider_status: word,
                error_code: get(&["ErrorCode"]),
            })
        }
        ReceiptsConfig::Hmac { secret, tolerance } => {
            let ts: u64 = header(headers, "webhook-timestamp")
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| {
                    InboundError::Unauthorized("missing or unreadable Webhook-Timestamp".into())
                })?;
            if now.abs_diff(ts) > tolerance.as_secs() {
                return Err(InboundError::Unauthorized(format!(
                    "Webhook-Timestamp is more than {tolerance:?} from now (a replay?)"
                )));
            }
            let signature = header(headers, "webhook-signature")
                .ok_or_else(|| InboundError::Unauthorized("missing Webhook-Signature".into()))?;
            let expected =
                notifyd_channels::webhook::signature(secret.expose().as_bytes(), ts, body);
            if !same_secret(signature, &expected) {
                return Err(InboundError::Unauthorized(
                    "Webhook-Signature does not match".into(),
                ));
            }
            let doc: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| invalid("body", format!("not JSON: {e}")))?;
            let text = |field: &'static str| {
                doc[field]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            let provider_id =
                text("provider_id").ok_or_else(|| invalid("provider_id", "missing"))?;
            let word = text("status").ok_or_else(|| invalid("status", "missing"))?;
            Ok(InboundReceipt {
                channel: channel.into(),
                provider_id,
                status: normalize(&word),
                provider_status: word,
                error_code: text("error_code"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use notifyd_channels::Secret;
    use std::time::Duration;

    #[test]
    fn twilio_signature_matches_twilios_documented_example() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    fn twilio() -> ReceiptsConfig {
        ReceiptsConfig::Twilio {
            auth_token: Secret::new("12345"),
            url: "https://notify.example.com/v1/inbound/sms".into(),
        }
    }

    fn signed_twilio(body: &str, query: Option<&str>) -> HeaderMap {
        let params: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let url = match query {
            Some(q) => format!("https://notify.example.com/v1/inbound/sms?{q}"),
            None => "https://notify.example.com/v1/inbound/sms".into(),
        };
        let mut h = HeaderMap::new();
        h.insert(
            "x-twilio-signature",
            HeaderValue::from_str(&twilio_signature("12345", &url, &params)).unwrap(),
        );
        h
    }

    const BODY: &str =
        "MessageSid=SM0123&MessageStatus=undelivered&ErrorCode=30003&To=%2B15551234567";

    #[test]
    fn a_correctly_signed_twilio_callback_is_normalized() {
        let r = verify_and_parse(
            &twilio(),
            "sms",
            &signed_twilio(BODY, Some("n=1")),
            Some("n=1"),
            BODY.as_bytes(),
            0,
        )
        .unwrap();
        assert_eq!(r.provider_id, "SM0123");
        assert_eq!(r.status, ReceiptStatus::Failed);
        assert_eq!(r.provider_status, "undelivered");
        assert_eq!(r.error_code.as_deref(), Some("30003"));
    }

    #[test]
    fn a_tampered_twilio_callback_is_unauthorized() {
        let headers = signed_twilio(BODY, None);
        let tampered = BODY.replace("undelivered", "delivered");
        assert!(matches!(
            verify_and_parse(&twilio(), "sms", &headers, None, tampered.as_bytes(), 0),
            Err(InboundError::Unauthorized(_))
        ));
        assert!(matches!(
            verify_and_parse(
                &twilio(),
                "sms",
                &HeaderMap::new(),
                None,
                BODY.as_bytes(),
                0
            ),
            Err(InboundError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_public_url_that_already_has_a_query_is_signed_as_twilio_called_it() {
        let config = ReceiptsConfig::Twilio {
            auth_token: Secret::new("12345"),
            url: "https://notify.example.com/v1/inbound/sms?tenant=a".into(),
        };
        let params: Vec<(String, String)> = form_urlencoded::parse(BODY.as_bytes())
            .into_owned()
            .collect();
        let mut h = HeaderMap::new();
        let called = "https://notify.example.com/v1/inbound/sms?tenant=a";
        h.insert(
            "x-twilio-signature",
            HeaderValue::from_str(&twilio_signature("12345", called, &params)).unwrap(),
        );
        let r = verify_and_parse(&config, "sms", &h, Some("tenant=a"), BODY.as_bytes(), 0);
        assert_eq!(r.map(|r| r.provider_id), Ok("SM0123".to_owned()));
        // Behind a proxy that drops the query, the URL as configured is what Twilio signed.
        let r = verify_and_parse(&config, "sms", &h, None, BODY.as_bytes(), 0);
        assert_eq!(r.map(|r| r.provider_id), Ok("SM0123".to_owned()));
    }

    fn hmac() -> ReceiptsConfig {
        ReceiptsConfig::Hmac {
            secret: Secret::new("relay-secret"),
            tolerance: Duration::from_secs(300),
        }
    }

    fn signed_hmac(body: &str, ts: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&ts.to_string()).unwrap(),
        );
        let sig = notifyd_channels::webhook::signature(b"relay-secret", ts, body.as_bytes());
        h.insert("webhook-signature", HeaderValue::from_str(&sig).unwrap());
        h
    }

    #[test]
    fn a_signed_json_receipt_is_normalized() {
        let body = r#"{"provider_id":"msg-9","status":"delivered"}"#;
        let r = verify_and_parse(
            &hmac(),
            "relay",
            &signed_hmac(body, 1_000),
            None,
            body.as_bytes(),
            1_100,
        )
        .unwrap();
        assert_eq!(
            (r.provider_id.as_str(), r.status),
            ("msg-9", ReceiptStatus::Delivered)
        );
    }

    #[test]
    fn a_stale_json_receipt_is_unauthorized_even_if_signed() {
        let body = r#"{"provider_id":"msg-9","status":"delivered"}"#;
        let err = verify_and_parse(
            &hmac(),
            "relay",
            &signed_hmac(body, 1_000),
            None,
            body.as_bytes(),
            1_000 + 301,
        )
        .unwrap_err();
        assert!(matches!(err, InboundError::Unauthorized(m) if m.contains("replay")));
    }

    #[test]
    fn a_signed_receipt_without_provider_id_names_the_field() {
        let body = r#"{"status":"delivered"}"#;
        let err = verify_and_parse(
            &hmac(),
            "relay",
            &signed_hmac(body, 5),
            None,
            body.as_bytes(),
            5,
        )
        .unwrap_err();
        assert_eq!(err, invalid("provider_id", "missing"));
    }
}
