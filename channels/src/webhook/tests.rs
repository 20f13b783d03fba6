use std::time::{Duration, SystemTime};

use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::*;
use crate::Timeouts;

fn message() -> Message {
    Message {
        list_unsubscribe: None,
        id: "0190d3a4-0000-7000-8000-000000000001".into(),
        channel: "hooks".into(),
        to: "ops-team".into(),
        subject: Some("Disk full".into()),
        body: Some("db-1 is at 97%".into()),
        html: None,
        data: Some(serde_json::json!({"host": "db-1"})),
        created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

fn ctx() -> SendContext {
    SendContext {
        attempt: 2,
        idempotency_key: "0190d3a4-0000-7000-8000-000000000001".into(),
    }
}

fn webhook(url: String, secret: Option<&str>, total: Duration) -> Webhook {
    let cfg = WebhookConfig {
        url,
        secret: secret.map(Secret::new),
        headers: Default::default(),
    };
    let ctx = BuildContext {
        channel: "hooks".into(),
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            read: total,
            total,
        },
    };
    Webhook::new(&cfg, &ctx).unwrap()
}

async fn server_answering(resp: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(resp)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn posts_the_documented_json_with_idempotency_key_and_verifiable_signature() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header("content-type", "application/json"))
        .and(header(
            "idempotency-key",
            "0190d3a4-0000-7000-8000-000000000001",
        ))
        .and(header_exists("webhook-timestamp"))
        .respond_with(ResponseTemplate::new(200).insert_header("x-request-id", "rcv-42"))
        .expect(1)
        .mount(&server)
        .await;
    let hook = webhook(
        format!("{}/hook", server.uri()),
        Some("s3cret"),
        Duration::from_secs(5),
    );

    let receipt = hook.send(&message(), &ctx()).await.unwrap();

    assert_eq!(receipt.provider_id.as_deref(), Some("rcv-42"));
    let req: Request = server.received_requests().await.unwrap().remove(0);
    let doc: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        doc,
        serde_json::json!({
            "id": "0190d3a4-0000-7000-8000-000000000001",
            "channel": "hooks",
            "to": "ops-team",
            "subject": "Disk full",
            "body": "db-1 is at 97%",
            "html": null,
            "data": {"host": "db-1"},
            "attempt": 2,
            "created_at": "2023-11-14T22:13:20.000Z"
        })
    );
    let ts: u64 = req.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = signature(b"s3cret", ts, &req.body);
    assert_eq!(req.headers["webhook-signature"].to_str().unwrap(), expected);
}

#[test]
fn signature_is_hmac_sha256_of_timestamp_dot_body() {
    // Computed independently with Python's hmac module over b'1700000000.{"a":1}'.
    assert_eq!(
        signature(b"key", 1_700_000_000, br#"{"a":1}"#),
        "v1=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
    );
}

#[tokio::test]
async fn without_secret_no_signature_headers_are_sent() {
    let server = server_answering(ResponseTemplate::new(204)).await;
    let hook = webhook(server.uri(), None, Duration::from_secs(5));
    hook.send(&message(), &ctx()).await.unwrap();
    let req = server.received_requests().await.unwrap().remove(0);
    assert!(req.headers.get("webhook-signature").is_none());
    assert!(req.headers.get("webhook-timestamp").is_none());
}

#[tokio::test]
async fn server_error_is_transient_with_retry_after() {
    let server =
        server_answering(ResponseTemplate::new(503).insert_header("retry-after", "7")).await;
    let err = webhook(server.uri(), None, Duration::from_secs(5))
        .send(&message(), &ctx())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::Transient {
            code: "http_503".into(),
            reason: String::new(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
}

#[tokio::test]
async fn too_many_requests_is_rate_limited() {
    let server =
        server_answering(ResponseTemplate::new(429).insert_header("retry-after", "3")).await;
    let err = webhook(server.uri(), None, Duration::from_secs(5))
        .send(&message(), &ctx())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        }
    );
}

#[tokio::test]
async fn request_timeout_status_is_transient() {
    let server = server_answering(ResponseTemplate::new(408)).await;
    let err = webhook(server.uri(), None, Duration::from_secs(5))
        .send(&message(), &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.class(), "transient");
    assert_eq!(err.code(), "http_408");
}

#[tokio::test]
async fn other_client_errors_are_permanent_with_a_bounded_reason() {
    let page = format!("<html><body>{}</body></html>", "Not Found ".repeat(100));
    let server = server_answering(ResponseTemplate::new(404).set_body_raw(page, "text/html")).await;
    let err = webhook(server.uri(), None, Duration::from_secs(5))
        .send(&message(), &ctx())
        .await
        .unwrap_err();
    let DeliveryError::Permanent { code, reason } = err else {
        panic!("expected permanent, got {err:?}");
    };
    assert_eq!(code, "http_404");
    assert!(reason.starts_with("<html><body>Not Found"));
    assert!(reason.chars().count() <= 201);
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_permanent() {
    let server = server_answering(
        ResponseTemplate::new(301).insert_header("location", "http://127.0.0.1:1/elsewhere"),
    )
    .await;
    let err = webhook(server.uri(), None, Duration::from_secs(5))
        .send(&message(), &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "http_301");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_slow_receiver_times_out_as_transient() {
    let server =
        server_answering(ResponseTemplate::new(200).set_delay(Duration::from_secs(3))).await;
    let err = webhook(server.uri(), None, Duration::from_millis(200))
        .send(&message(), &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.class(), "transient");
    assert_eq!(err.code(), "timeout");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // Bind then drop a listener: the port is very likely closed now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = webhook(
        format!("http://127.0.0.1:{port}/"),
        None,
        Duration::from_secs(2),
    )
    .send(&message(), &ctx())
    .await
    .unwrap_err();
    assert_eq!(err.class(), "transient");
    assert_eq!(err.code(), "connect");
}

#[test]
fn a_url_that_is_not_http_is_refused_at_build() {
    let cfg = WebhookConfig {
        url: "ftp://example.com/x".into(),
        secret: None,
        headers: Default::default(),
    };
    let ctx = BuildContext {
        channel: "hooks".into(),
        timeouts: Timeouts::default(),
    };
    assert_eq!(
        Webhook::new(&cfg, &ctx).unwrap_err(),
        BuildError::invalid("url", "must be http:// or https://")
    );
}
