use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use web_push_native::p256;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::client::Claims;
use super::*;
use crate::{BuildContext, Channel, DeliveryError, Message, Secret, SendContext, Timeouts};

const VAPID_KEY: &str = include_str!("testdata/test-only-vapid-key.pem");
const VAPID_PUBLIC: &str = include_str!("testdata/test-only-vapid-pub.pem");

/// The browser's side: its key pair and auth secret.
fn subscriber() -> (p256::SecretKey, [u8; 16]) {
    (p256::SecretKey::from_slice(&[7u8; 32]).unwrap(), [9u8; 16])
}

fn subscription(endpoint: &str) -> String {
    let (secret, auth) = subscriber();
    let point = secret.public_key().as_affine().to_encoded_point(false);
    serde_json::json!({
        "endpoint": endpoint,
        "expirationTime": null,
        "keys": {"p256dh": URL_SAFE_NO_PAD.encode(point.as_bytes()), "auth": URL_SAFE_NO_PAD.encode(auth)}
    })
    .to_string()
}

fn webpush(urgency: Option<Urgency>) -> Webpush {
    webpush_with(urgency, Timeouts::default())
}

fn webpush_with(urgency: Option<Urgency>, timeouts: Timeouts) -> Webpush {
    let cfg = WebpushConfig {
        vapid_private_key: Secret::new(VAPID_KEY),
        subject: "mailto:ops@example.com".into(),
        ttl: Duration::from_secs(3600),
        urgency,
    };
    Webpush::new(
        &cfg,
        &BuildContext {
            channel: "web".into(),
            timeouts,
        },
    )
    .unwrap()
}

fn message(to: String) -> Message {
    Message {
        list_unsubscribe: None,
        id: "n-9".into(),
        channel: "web".into(),
        to,
        subject: Some("Order shipped".into()),
        body: Some("It is on its way".into()),
        html: None,
        data: Some(serde_json::json!({"order": 42, "topic": "order-42"})),
        created_at: SystemTime::UNIX_EPOCH,
    }
}

fn ctx() -> SendContext {
    SendContext {
        attempt: 1,
        idempotency_key: "n-9".into(),
    }
}

/// The uncompressed public point at the end of the SPKI DER, base64url: what `k=` must be.
fn vapid_public_b64() -> String {
    let body: String = VAPID_PUBLIC
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body).unwrap();
    URL_SAFE_NO_PAD.encode(&der[der.len() - 65..])
}

#[tokio::test]
async fn posts_an_encrypted_payload_the_subscriber_can_decrypt_with_vapid_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/push/abc123"))
        .and(header("ttl", "3600"))
        .and(header("content-encoding", "aes128gcm"))
        .and(header("content-type", "application/octet-stream"))
        .and(header("urgency", "high"))
        .and(header("topic", "order-42"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("location", format!("{}/msg/1", server.uri()).as_str()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let receipt = webpush(Some(Urgency::High))
        .send(
            &message(subscription(&format!("{}/push/abc123", server.uri()))),
            &ctx(),
        )
        .await
        .unwrap();
    assert_eq!(receipt.provider_id, Some(format!("{}/msg/1", server.uri())));

    let req = server.received_requests().await.unwrap().remove(0);
    let (secret, auth) = subscriber();
    let plain = web_push_native::decrypt(
        req.body.clone(),
        &secret,
        &web_push_native::Auth::clone_from_slice(&auth),
    )
    .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"title": "Order shipped", "body": "It is on its way", "data": {"order": 42, "topic": "order-42"}, "id": "n-9"})
    );

    let auth_header = req.headers["authorization"].to_str().unwrap().to_owned();
    let rest = auth_header.strip_prefix("vapid t=").unwrap();
    let (jwt, k) = rest.split_once(", k=").unwrap();
    assert_eq!(k, vapid_public_b64());
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[server.uri()]);
    let claims = jsonwebtoken::decode::<Claims>(
        jwt,
        &DecodingKey::from_ec_pem(VAPID_PUBLIC.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims.sub, "mailto:ops@example.com");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        claims.exp > now && claims.exp <= now + 24 * 3600,
        "exp {}",
        claims.exp
    );
}

async fn answered(resp: ResponseTemplate) -> DeliveryError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(resp)
        .mount(&server)
        .await;
    webpush(None)
        .send(
            &message(subscription(&format!("{}/push/x", server.uri()))),
            &ctx(),
        )
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_gone_subscription_is_an_invalid_recipient() {
    assert_eq!(
        answered(ResponseTemplate::new(410)).await.code(),
        "subscription_gone"
    );
    assert_eq!(
        answered(ResponseTemplate::new(404)).await.class(),
        "invalid_recipient"
    );
}

#[tokio::test]
async fn other_answers_are_classified() {
    assert_eq!(
        answered(ResponseTemplate::new(413)).await.code(),
        "payload_too_large"
    );
    assert_eq!(
        answered(ResponseTemplate::new(403).set_body_raw("bad jwt", "text/plain"))
            .await
            .class(),
        "channel_fault"
    );
    assert_eq!(
        answered(ResponseTemplate::new(429).insert_header("retry-after", "9")).await,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(9))
        }
    );
    assert_eq!(
        answered(ResponseTemplate::new(502).set_body_raw("<html>x</html>", "text/html"))
            .await
            .class(),
        "transient"
    );
    assert_eq!(
        answered(ResponseTemplate::new(400)).await.class(),
        "permanent"
    );
}

#[tokio::test]
async fn validate_checks_the_subscription_and_the_size() {
    let w = webpush(None);
    assert_eq!(
        w.validate(&message("not json".into())).unwrap_err().field,
        "to"
    );
    assert!(
        w.validate(&message(subscription("http://push.example.com/x")))
            .unwrap_err()
            .message
            .contains("https")
    );
    let short_key = subscription("https://push.example.com/x")
        .replace("\"auth\":\"CQkJCQkJCQkJCQkJCQkJCQ\"", "\"auth\":\"CQkJ\"");
    assert!(
        w.validate(&message(short_key))
            .unwrap_err()
            .message
            .contains("keys.auth")
    );
    let big = Message {
        list_unsubscribe: None,
        body: Some("x".repeat(4000)),
        ..message(subscription("https://push.example.com/x"))
    };
    assert_eq!(w.validate(&big).unwrap_err().code, "too_long");
    assert!(
        w.validate(&message(subscription("https://push.example.com/x")))
            .is_ok()
    );
}

#[test]
fn a_bad_subject_is_refused_at_build() {
    let cfg = WebpushConfig {
        vapid_private_key: Secret::new(VAPID_KEY),
        subject: "ops@example.com".into(),
        ttl: Duration::from_secs(60),
        urgency: None,
    };
    let err = Webpush::new(
        &cfg,
        &BuildContext {
            channel: "w".into(),
            timeouts: Timeouts::default(),
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`subject`: must be a mailto: or https:// URL"
    );
}

/// A total timeout short enough for a fast test, far shorter than the mock's delay.
fn short_timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_millis(200),
        total: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn a_push_service_slower_than_the_total_timeout_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let err = webpush_with(None, short_timeouts())
        .send(
            &message(subscription(&format!("{}/push/x", server.uri()))),
            &ctx(),
        )
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "timeout"));
}
