use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::client::{Claims, apns_id};
use super::*;
use crate::{BuildContext, Channel, DeliveryError, Message, Secret, SendContext, Timeouts};

const KEY: &str = include_str!("testdata/test-only-AuthKey.p8");
const PUBLIC_KEY: &str = include_str!("testdata/test-only-AuthKey-pub.pem");
const DEVICE: &str = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad";

#[derive(Clone, Debug)]
struct Seen {
    version: Version,
    path: String,
    headers: HeaderMap,
    body: serde_json::Value,
}

type Script = Arc<dyn Fn(usize) -> (StatusCode, Option<&'static str>) + Send + Sync>;

/// A local HTTP/2 (h2c) server that records requests and answers per the script.
async fn apple(
    script: impl Fn(usize) -> (StatusCode, Option<&'static str>) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = (seen.clone(), Arc::new(script) as Script);
    async fn handle(
        State((seen, script)): State<(Arc<Mutex<Vec<Seen>>>, Script)>,
        version: Version,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let n = {
            let mut s = seen.lock().unwrap();
            s.push(Seen {
                version,
                path: uri.path().to_owned(),
                headers,
                body: serde_json::from_slice(&body).unwrap_or_default(),
            });
            s.len() - 1
        };
        let (status, reason) = script(n);
        match reason {
            Some(r) => (
                status,
                [("content-type", "application/json")],
                format!(r#"{{"reason":"{r}"}}"#),
            )
                .into_response(),
            // APNs echoes the request's apns-id, or makes one up when there was none.
            None => (
                status,
                [(
                    "apns-id",
                    seen.lock().unwrap()[n]
                        .headers
                        .get("apns-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("2a5d5c3e-0000-4000-8000-000000000001")
                        .to_owned(),
                )],
            )
                .into_response(),
        }
    }
    let app = Router::new()
        .route("/3/device/{token}", axum::routing::post(handle))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn apns(base_url: &str) -> Apns {
    apns_with(base_url, Timeouts::default())
}

fn apns_with(base_url: &str, timeouts: Timeouts) -> Apns {
    let cfg = ApnsConfig {
        key: Secret::new(KEY),
        key_id: "ABC123DEFG".into(),
        team_id: "DEF123GHIJ".into(),
        topic: "com.example.app".into(),
        environment: ApnsEnvironment::Production,
        base_url: Some(base_url.into()),
    };
    Apns::new(
        &cfg,
        &BuildContext {
            channel: "ios".into(),
            timeouts,
        },
    )
    .unwrap()
}

fn message() -> Message {
    Message {
        list_unsubscribe: None,
        id: "0190d3a4-0000-7000-8000-0000000000aa".into(),
        channel: "ios".into(),
        to: DEVICE.into(),
        subject: Some("Order shipped".into()),
        body: Some("It is on its way".into()),
        html: None,
        data: Some(
            serde_json::json!({"aps": {"sound": "default"}, "order": 42, "collapse_id": "order-42"}),
        ),
        created_at: SystemTime::UNIX_EPOCH,
    }
}

fn ctx() -> SendContext {
    SendContext {
        attempt: 1,
        idempotency_key: "x".into(),
    }
}

fn verify(headers: &HeaderMap) -> (Option<String>, Claims) {
    let auth = headers["authorization"].to_str().unwrap();
    let jwt = auth.strip_prefix("bearer ").unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Claims>(
        jwt,
        &DecodingKey::from_ec_pem(PUBLIC_KEY.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    (data.header.kid, data.claims)
}

#[tokio::test]
async fn sends_over_http2_with_every_apns_header_and_a_valid_es256_token() {
    let (url, seen) = apple(|_| (StatusCode::OK, None)).await;
    let receipt = apns(&url).send(&message(), &ctx()).await.unwrap();
    assert_eq!(
        receipt.provider_id.as_deref(),
        Some("0190d3a4-0000-7000-8000-0000000000aa")
    );
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.version, Version::HTTP_2);
    assert_eq!(req.path, format!("/3/device/{DEVICE}"));
    assert_eq!(req.headers["apns-topic"], "com.example.app");
    assert_eq!(req.headers["apns-push-type"], "alert");
    assert_eq!(req.headers["apns-priority"], "10");
    assert_eq!(
        req.headers.get("apns-expiration"),
        None,
        "without one APNs stores the push while the device is offline"
    );
    assert_eq!(req.headers["apns-collapse-id"], "order-42");
    assert_eq!(
        req.headers["apns-id"],
        "0190d3a4-0000-7000-8000-0000000000aa"
    );
    let (kid, claims) = verify(&req.headers);
    assert_eq!(kid.as_deref(), Some("ABC123DEFG"));
    assert_eq!(claims.iss, "DEF123GHIJ");
    assert_eq!(
        req.body,
        serde_json::json!({"aps": {"alert": {"title": "Order shipped", "body": "It is on its way"}, "sound": "default"}, "order": 42})
    );
}

#[tokio::test]
async fn without_text_it_is_a_background_push() {
    let (url, seen) = apple(|_| (StatusCode::OK, None)).await;
    let silent = Message {
        list_unsubscribe: None,
        subject: None,
        body: None,
        data: None,
        ..message()
    };
    apns(&url).send(&silent, &ctx()).await.unwrap();
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.headers["apns-push-type"], "background");
    assert_eq!(req.headers["apns-priority"], "5");
    assert_eq!(
        req.body,
        serde_json::json!({"aps": {"content-available": 1}})
    );
}

#[tokio::test]
async fn the_token_is_reused_across_sends() {
    let (url, seen) = apple(|_| (StatusCode::OK, None)).await;
    let a = apns(&url);
    a.send(&message(), &ctx()).await.unwrap();
    a.send(&message(), &ctx()).await.unwrap();
    let s = seen.lock().unwrap();
    assert_eq!(s[0].headers["authorization"], s[1].headers["authorization"]);
}

async fn answered(status: StatusCode, reason: &'static str) -> DeliveryError {
    let (url, _) = apple(move |_| (status, Some(reason))).await;
    apns(&url).send(&message(), &ctx()).await.unwrap_err()
}

#[tokio::test]
async fn dead_device_tokens_are_invalid_recipients() {
    let err = answered(StatusCode::BAD_REQUEST, "BadDeviceToken").await;
    assert_eq!(
        (err.class(), err.code()),
        ("invalid_recipient", "BadDeviceToken")
    );
    let err = answered(StatusCode::GONE, "Unregistered").await;
    assert_eq!(
        (err.class(), err.code()),
        ("invalid_recipient", "Unregistered")
    );
    assert_eq!(
        answered(StatusCode::BAD_REQUEST, "DeviceTokenNotForTopic")
            .await
            .class(),
        "invalid_recipient"
    );
}

#[tokio::test]
async fn too_many_requests_is_rate_limited_and_server_errors_are_transient() {
    assert_eq!(
        answered(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
            .await
            .class(),
        "rate_limited"
    );
    assert_eq!(
        answered(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
            .await
            .class(),
        "transient"
    );
    assert_eq!(
        answered(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            .await
            .class(),
        "transient"
    );
}

#[tokio::test]
async fn an_expiration_in_data_becomes_the_apns_expiration_header() {
    let (url, seen) = apple(|_| (StatusCode::OK, None)).await;
    let once = Message {
        list_unsubscribe: None,
        data: Some(serde_json::json!({"expiration": 0})),
        ..message()
    };
    apns(&url).send(&once, &ctx()).await.unwrap();
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.headers["apns-expiration"], "0");
    assert_eq!(
        req.body,
        serde_json::json!({"aps": {"alert": {"title": "Order shipped", "body": "It is on its way"}}})
    );
}

#[tokio::test]
async fn a_refused_topic_fails_the_notification_not_the_channel() {
    // `data.topic` can set the topic per notification: one bad one must not hold the channel.
    for reason in ["TopicDisallowed", "BadTopic", "MissingTopic"] {
        let err = answered(StatusCode::BAD_REQUEST, reason).await;
        assert_eq!((err.class(), err.code()), ("permanent", reason));
    }
}

#[tokio::test]
async fn a_bad_certificate_environment_is_a_channel_fault() {
    let err = answered(StatusCode::FORBIDDEN, "BadCertificateEnvironment").await;
    assert_eq!(
        (err.class(), err.code()),
        ("channel_fault", "BadCertificateEnvironment")
    );
}

#[tokio::test]
async fn an_idle_timeout_is_transient() {
    let err = answered(StatusCode::BAD_REQUEST, "IdleTimeout").await;
    assert_eq!((err.class(), err.code()), ("transient", "IdleTimeout"));
}

#[tokio::test]
async fn a_too_large_payload_is_permanent() {
    let err = answered(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge").await;
    assert_eq!((err.class(), err.code()), ("permanent", "PayloadTooLarge"));
}

#[tokio::test]
async fn an_expired_provider_token_is_refreshed_once_then_the_send_succeeds() {
    let (url, seen) = apple(|n| {
        if n == 0 {
            (StatusCode::FORBIDDEN, Some("ExpiredProviderToken"))
        } else {
            (StatusCode::OK, None)
        }
    })
    .await;
    apns(&url).send(&message(), &ctx()).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_invalid_provider_token_twice_is_a_channel_fault() {
    let (url, seen) = apple(|_| (StatusCode::FORBIDDEN, Some("InvalidProviderToken"))).await;
    let err = apns(&url).send(&message(), &ctx()).await.unwrap_err();
    assert_eq!(
        (err.class(), err.code()),
        ("channel_fault", "InvalidProviderToken")
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "one refresh, one resend, no more"
    );
}

#[tokio::test]
async fn validate_wants_a_hex_token_and_a_small_payload() {
    let a = apns("http://127.0.0.1:1");
    assert_eq!(
        a.validate(&Message {
            list_unsubscribe: None,
            to: "xyz".into(),
            ..message()
        })
        .unwrap_err()
        .field,
        "to"
    );
    assert_eq!(
        a.validate(&Message {
            list_unsubscribe: None,
            body: Some("x".repeat(5000)),
            ..message()
        })
        .unwrap_err()
        .code,
        "too_long"
    );
    assert!(a.validate(&message()).is_ok());
}

#[test]
fn apns_ids_come_from_uuid_shaped_notification_ids() {
    assert_eq!(
        apns_id("0190d3a4-0000-7000-8000-0000000000aa").as_deref(),
        Some("0190d3a4-0000-7000-8000-0000000000aa")
    );
    assert_eq!(
        apns_id("0190D3A400007000800000000000ABCD").as_deref(),
        Some("0190d3a4-0000-7000-8000-00000000abcd"),
        "canonical: lowercase 8-4-4-4-12"
    );
    assert_eq!(apns_id("n-1"), None);
}

#[tokio::test]
async fn nobody_listening_is_transient() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = apns(&format!("http://127.0.0.1:{port}"))
        .send(&message(), &ctx())
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "connect"));
}

/// A plain HTTP/2 server that answers every push with this status and raw body, as a proxy in
/// front of APNs would.
async fn proxy(status: StatusCode, body: &'static str) -> String {
    let app = Router::new().route(
        "/3/device/{token}",
        axum::routing::post(move || async move { (status, [("content-type", "text/html")], body) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn an_html_4xx_without_a_reason_is_transient() {
    for status in [
        StatusCode::BAD_REQUEST,
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
    ] {
        let url = proxy(status, "<html><body>Blocked</body></html>").await;
        let err = apns(&url).send(&message(), &ctx()).await.unwrap_err();
        let code = format!("http_{}", status.as_u16());
        assert_eq!((err.class(), err.code()), ("transient", code.as_str()));
    }
}

#[tokio::test]
async fn an_html_429_is_still_rate_limited() {
    let url = proxy(StatusCode::TOO_MANY_REQUESTS, "<html>slow down</html>").await;
    let err = apns(&url).send(&message(), &ctx()).await.unwrap_err();
    assert_eq!(err, DeliveryError::RateLimited { retry_after: None });
}

#[test]
fn config_notifyd_toml_documents_every_apns_key() {
    let toml = include_str!("../../../../config/notifyd.toml");
    let start = toml.find("# kind = \"apns\"").unwrap();
    let block = &toml[start..];
    let block = &block[..block.find("\n#\n").unwrap_or(block.len())];
    for key in [
        "key_file",
        "key_id",
        "team_id",
        "topic",
        "environment",
        "base_url",
    ] {
        assert!(
            block.contains(&format!("\n# {key} = ")),
            "{key} missing from the apns example:\n{block}"
        );
    }
}

#[tokio::test]
async fn an_answer_slower_than_the_total_timeout_is_transient() {
    let app = Router::new().route(
        "/3/device/{token}",
        axum::routing::post(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let timeouts = Timeouts {
        connect: std::time::Duration::from_secs(1),
        read: std::time::Duration::from_millis(200),
        total: std::time::Duration::from_millis(200),
    };
    let err = apns_with(&url, timeouts)
        .send(&message(), &ctx())
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "timeout"));
}
