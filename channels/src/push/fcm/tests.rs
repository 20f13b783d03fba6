use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::client::{Claims, SCOPE};
use super::*;
use crate::{BuildContext, Channel, DeliveryError, Message, Secret, SendContext, Timeouts};

const KEY: &str = include_str!("testdata/test-only-rsa-key.pem");
const PUBLIC_KEY: &str = include_str!("testdata/test-only-rsa-pub.pem");
const SEND: &str = "/v1/projects/demo-project/messages:send";
const TOKEN: &str = "ya29.test-access-token";

fn service_account(token_uri: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "kid-123",
        "private_key": KEY,
        "client_email": "notifyd@demo-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    })
    .to_string()
}

fn fcm(server: &MockServer) -> Fcm {
    fcm_with(server, Timeouts::default())
}

fn fcm_with(server: &MockServer, timeouts: Timeouts) -> Fcm {
    let cfg = FcmConfig {
        service_account: Secret::new(service_account(&format!("{}/token", server.uri()))),
        project_id: None,
        base_url: server.uri(),
        token_url: None,
    };
    Fcm::new(
        &cfg,
        &BuildContext {
            channel: "push".into(),
            timeouts,
        },
    )
    .unwrap()
}

fn message() -> Message {
    Message {
        list_unsubscribe: None,
        id: "n-1".into(),
        channel: "push".into(),
        to: "fYRW3:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx".into(),
        subject: Some("Order shipped".into()),
        body: Some("It is on its way".into()),
        html: None,
        data: Some(serde_json::json!({"data": {"order": "42"}, "android": {"priority": "high"}})),
        created_at: SystemTime::UNIX_EPOCH,
    }
}

fn ctx() -> SendContext {
    SendContext {
        attempt: 1,
        idempotency_key: "n-1".into(),
    }
}

async fn token_endpoint(server: &MockServer, expires_in: u64) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": TOKEN, "expires_in": expires_in, "token_type": "Bearer"
        })))
        .mount(server)
        .await;
}

fn fcm_error(
    status: u16,
    rpc_status: &str,
    error_code: Option<&str>,
    message: &str,
) -> ResponseTemplate {
    let details = match error_code {
        Some(code) => {
            serde_json::json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}])
        }
        None => serde_json::json!([]),
    };
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "error": {"code": status, "message": message, "status": rpc_status, "details": details}
    }))
}

async fn send_answered(resp: ResponseTemplate) -> Result<crate::Receipt, DeliveryError> {
    let server = MockServer::start().await;
    token_endpoint(&server, 3599).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(resp)
        .mount(&server)
        .await;
    fcm(&server).send(&message(), &ctx()).await
}

fn token_requests(requests: &[Request]) -> Vec<&Request> {
    requests
        .iter()
        .filter(|r| r.url.path() == "/token")
        .collect()
}

#[tokio::test]
async fn the_jwt_assertion_is_signed_by_the_service_account_key_with_the_fcm_scope() {
    let server = MockServer::start().await;
    token_endpoint(&server, 3599).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"name": "projects/demo-project/messages/0:1500415314455276%31bd1c9631bd1c96"})))
        .mount(&server)
        .await;
    fcm(&server).send(&message(), &ctx()).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    let token_req = token_requests(&requests)[0];
    let form: Vec<(String, String)> = form_pairs(&token_req.body);
    assert_eq!(
        form[0],
        (
            "grant_type".into(),
            "urn:ietf:params:oauth:grant-type:jwt-bearer".into()
        )
    );
    let assertion = &form[1].1;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[format!("{}/token", server.uri())]);
    let decoded = jsonwebtoken::decode::<Claims>(
        assertion,
        &DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(decoded.header.kid.as_deref(), Some("kid-123"));
    assert_eq!(
        decoded.claims.iss,
        "notifyd@demo-project.iam.gserviceaccount.com"
    );
    assert_eq!(decoded.claims.scope, SCOPE);
    assert_eq!(decoded.claims.exp - decoded.claims.iat, 3600);
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":")))
        .collect()
}

#[tokio::test]
async fn sends_the_v1_message_with_the_bearer_token_and_returns_its_name() {
    let server = MockServer::start().await;
    token_endpoint(&server, 3599).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "projects/demo-project/messages/0:1"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let receipt = fcm(&server).send(&message(), &ctx()).await.unwrap();
    assert_eq!(
        receipt.provider_id.as_deref(),
        Some("projects/demo-project/messages/0:1")
    );
    let requests = server.received_requests().await.unwrap();
    let sent: serde_json::Value = requests
        .iter()
        .find(|r| r.url.path() == SEND)
        .unwrap()
        .body_json()
        .unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"message": {
            "token": "fYRW3:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx",
            "notification": {"title": "Order shipped", "body": "It is on its way"},
            "data": {"order": "42"},
            "android": {"priority": "high"}
        }})
    );
}

#[tokio::test]
async fn one_token_serves_many_concurrent_sends() {
    let server = MockServer::start().await;
    token_endpoint(&server, 3599).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "projects/p/messages/1"})),
        )
        .mount(&server)
        .await;
    let f = std::sync::Arc::new(fcm(&server));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let f = f.clone();
        tasks.push(tokio::spawn(
            async move { f.send(&message(), &ctx()).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        token_requests(&server.received_requests().await.unwrap()).len(),
        1
    );
}

#[tokio::test]
async fn a_token_about_to_expire_is_refreshed() {
    let server = MockServer::start().await;
    // 60 s left is inside the 5-minute refresh margin: every send needs a new one.
    token_endpoint(&server, 60).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "projects/p/messages/1"})),
        )
        .mount(&server)
        .await;
    let f = fcm(&server);
    f.send(&message(), &ctx()).await.unwrap();
    f.send(&message(), &ctx()).await.unwrap();
    assert_eq!(
        token_requests(&server.received_requests().await.unwrap()).len(),
        2
    );
}

#[tokio::test]
async fn a_401_without_fcm_error_refreshes_the_token_once_and_resends() {
    let server = MockServer::start().await;
    token_endpoint(&server, 3599).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(fcm_error(
            401,
            "UNAUTHENTICATED",
            None,
            "Request had invalid authentication credentials.",
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "projects/p/messages/2"})),
        )
        .mount(&server)
        .await;
    let receipt = fcm(&server).send(&message(), &ctx()).await.unwrap();
    assert_eq!(
        receipt.provider_id.as_deref(),
        Some("projects/p/messages/2")
    );
    assert_eq!(
        token_requests(&server.received_requests().await.unwrap()).len(),
        2
    );
}

#[tokio::test]
async fn unregistered_is_a_dead_token() {
    let err = send_answered(fcm_error(
        404,
        "NOT_FOUND",
        Some("UNREGISTERED"),
        "Requested entity was not found.",
    ))
    .await
    .unwrap_err();
    assert_eq!(
        (err.class(), err.code()),
        ("invalid_recipient", "UNREGISTERED")
    );
}

#[tokio::test]
async fn an_invalid_registration_token_is_an_invalid_recipient() {
    let err = send_answered(fcm_error(
        400,
        "INVALID_ARGUMENT",
        Some("INVALID_ARGUMENT"),
        "The registration token is not a valid FCM registration token",
    ))
    .await
    .unwrap_err();
    assert_eq!(
        (err.class(), err.code()),
        ("invalid_recipient", "INVALID_ARGUMENT")
    );
    let err = send_answered(fcm_error(
        400,
        "INVALID_ARGUMENT",
        Some("INVALID_ARGUMENT"),
        "Invalid value at 'message.data'",
    ))
    .await
    .unwrap_err();
    assert_eq!(err.class(), "permanent");
}

#[tokio::test]
async fn sender_id_mismatch_is_an_invalid_recipient() {
    let err = send_answered(fcm_error(
        403,
        "PERMISSION_DENIED",
        Some("SENDER_ID_MISMATCH"),
        "SenderId mismatch",
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), "SENDER_ID_MISMATCH");
    assert_eq!(err.class(), "invalid_recipient");
}

#[tokio::test]
async fn third_party_auth_error_is_a_channel_fault() {
    let err = send_answered(fcm_error(
        401,
        "UNAUTHENTICATED",
        Some("THIRD_PARTY_AUTH_ERROR"),
        "APNs auth failed",
    ))
    .await
    .unwrap_err();
    assert_eq!(
        (err.class(), err.code()),
        ("channel_fault", "THIRD_PARTY_AUTH_ERROR")
    );
}

#[tokio::test]
async fn quota_exceeded_is_rate_limited_with_retry_after() {
    let err = send_answered(
        fcm_error(
            429,
            "RESOURCE_EXHAUSTED",
            Some("QUOTA_EXCEEDED"),
            "Quota exceeded",
        )
        .insert_header("retry-after", "10"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(10))
        }
    );
}

#[tokio::test]
async fn unavailable_and_internal_are_transient() {
    let err = send_answered(
        fcm_error(
            503,
            "UNAVAILABLE",
            Some("UNAVAILABLE"),
            "The service is currently unavailable.",
        )
        .insert_header("retry-after", "5"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.class(), err.retry_after()),
        ("transient", Some(Duration::from_secs(5)))
    );
    assert_eq!(
        send_answered(fcm_error(
            500,
            "INTERNAL",
            Some("INTERNAL"),
            "Internal error"
        ))
        .await
        .unwrap_err()
        .class(),
        "transient"
    );
}

#[tokio::test]
async fn html_and_truncated_answers_are_transient() {
    let err = send_answered(
        ResponseTemplate::new(502).set_body_raw("<html>Bad Gateway</html>", "text/html"),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "http_502"));
    let err = send_answered(
        ResponseTemplate::new(200).set_body_raw(r#"{"name": "proj"#, "application/json"),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "bad_response"));
}

#[tokio::test]
async fn a_refused_service_account_is_a_channel_fault() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})))
        .mount(&server)
        .await;
    let err = fcm(&server).send(&message(), &ctx()).await.unwrap_err();
    assert_eq!(
        err,
        DeliveryError::channel_fault("invalid_grant", "Invalid JWT Signature.")
    );
}

#[tokio::test]
async fn validate_checks_token_data_shape_and_size() {
    let server = MockServer::start().await;
    let f = fcm(&server);
    assert_eq!(
        f.validate(&Message {
            list_unsubscribe: None,
            to: "not a token!".into(),
            ..message()
        })
        .unwrap_err()
        .field,
        "to"
    );
    let bad_data = Message {
        list_unsubscribe: None,
        data: Some(serde_json::json!({"data": {"n": 1}})),
        ..message()
    };
    assert_eq!(f.validate(&bad_data).unwrap_err().field, "data");
    let unknown = Message {
        list_unsubscribe: None,
        data: Some(serde_json::json!({"colour": "red"})),
        ..message()
    };
    assert!(f.validate(&unknown).unwrap_err().message.contains("colour"));
    let big = Message {
        list_unsubscribe: None,
        body: Some("x".repeat(5000)),
        ..message()
    };
    assert_eq!(f.validate(&big).unwrap_err().code, "too_long");
    assert!(f.validate(&message()).is_ok());
}

#[tokio::test]
async fn an_html_4xx_without_a_google_status_is_transient() {
    for status in [400, 403, 404] {
        let err = send_answered(
            ResponseTemplate::new(status).set_body_raw("<html>Error</html>", "text/html"),
        )
        .await
        .unwrap_err();
        let code = format!("http_{status}");
        assert_eq!((err.class(), err.code()), ("transient", code.as_str()));
    }
}

#[tokio::test]
async fn an_html_429_is_still_rate_limited() {
    let err = send_answered(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "9")
            .set_body_raw("<html>Too many</html>", "text/html"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(9))
        }
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
async fn a_send_slower_than_the_total_timeout_is_transient() {
    let server = MockServer::start().await;
    token_endpoint(&server, 3599).await;
    Mock::given(method("POST"))
        .and(path(SEND))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "projects/p/messages/1"}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let err = fcm_with(&server, short_timeouts())
        .send(&message(), &ctx())
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "timeout"));
}
