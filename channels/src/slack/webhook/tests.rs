use std::time::{Duration, SystemTime};

use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::{BuildContext, Channel, DeliveryError, Message, Secret, SendContext, Timeouts};

fn hook(server: &MockServer) -> SlackWebhook {
    hook_with(server, Timeouts::default())
}

fn hook_with(server: &MockServer, timeouts: Timeouts) -> SlackWebhook {
    let cfg = SlackWebhookConfig {
        url: Secret::new(format!("{}/services/T000/B000/XXXX", server.uri())),
    };
    SlackWebhook::new(
        &cfg,
        &BuildContext {
            channel: "ops".into(),
            timeouts,
        },
    )
    .unwrap()
}

fn message(data: Option<serde_json::Value>) -> Message {
    Message {
        list_unsubscribe: None,
        id: "n-1".into(),
        channel: "ops".into(),
        to: "#ops".into(),
        subject: Some("Disk full".into()),
        body: Some("db-1 is at 97%".into()),
        html: None,
        data,
        created_at: SystemTime::UNIX_EPOCH,
    }
}

fn ctx() -> SendContext {
    SendContext {
        attempt: 1,
        idempotency_key: "n-1".into(),
    }
}

async fn answered(status: u16, text: &str) -> Result<crate::Receipt, DeliveryError> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(text.to_owned(), "text/html"))
        .mount(&server)
        .await;
    hook(&server).send(&message(None), &ctx()).await
}

#[tokio::test]
async fn posts_text_and_blocks_as_json_and_ok_is_delivered() {
    let server = MockServer::start().await;
    let blocks =
        serde_json::json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*Disk full*"}}]);
    Mock::given(method("POST"))
        .and(path("/services/T000/B000/XXXX"))
        .and(header("content-type", "application/json"))
        .and(body_json(
            serde_json::json!({"text": "*Disk full*\ndb-1 is at 97%", "blocks": blocks}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_raw("ok", "text/html"))
        .expect(1)
        .mount(&server)
        .await;
    hook(&server)
        .send(
            &message(Some(serde_json::json!({"blocks": blocks, "ignored": 1}))),
            &ctx(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn invalid_payload_is_permanent() {
    assert_eq!(
        answered(400, "invalid_payload").await.unwrap_err(),
        DeliveryError::permanent("invalid_payload", "invalid_payload")
    );
}

#[tokio::test]
async fn a_revoked_webhook_is_a_channel_fault() {
    assert_eq!(
        answered(404, "no_service").await.unwrap_err().class(),
        "channel_fault"
    );
    assert_eq!(
        answered(403, "invalid_token").await.unwrap_err().class(),
        "channel_fault"
    );
    assert_eq!(
        answered(410, "channel_is_archived")
            .await
            .unwrap_err()
            .class(),
        "channel_fault"
    );
}

#[tokio::test]
async fn rate_limit_and_server_errors_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "30"))
        .mount(&server)
        .await;
    assert_eq!(
        hook(&server)
            .send(&message(None), &ctx())
            .await
            .unwrap_err(),
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(30))
        }
    );
    assert_eq!(
        answered(500, "rollup_error").await.unwrap_err().class(),
        "transient"
    );
    assert_eq!(
        answered(503, "<html>Service Unavailable</html>")
            .await
            .unwrap_err()
            .code(),
        "http_503"
    );
}

#[tokio::test]
async fn a_200_without_ok_is_transient() {
    assert_eq!(
        answered(200, "<html>captive portal</html>")
            .await
            .unwrap_err()
            .code(),
        "bad_response"
    );
}

#[test]
fn debug_output_never_shows_the_webhook_url() {
    let url = "https://hooks.slack.com/services/T0001/B0001/s3cr3tT0k3n";
    let hook = SlackWebhook::new(
        &SlackWebhookConfig {
            url: Secret::new(url),
        },
        &BuildContext {
            channel: "ops".into(),
            timeouts: Timeouts::default(),
        },
    )
    .unwrap();
    let debug = format!("{hook:?}");
    assert!(!debug.contains("s3cr3tT0k3n"), "{debug}");
    assert!(!debug.contains("hooks.slack.com"), "{debug}");
    assert_eq!(debug, r#"SlackWebhook { url: "***", .. }"#);
}

#[tokio::test]
async fn an_html_403_from_a_proxy_is_transient() {
    let err = answered(403, "<html><body>Access denied</body></html>")
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "http_403"));
}

#[tokio::test]
async fn a_slack_code_on_403_is_still_slacks_answer() {
    let err = answered(403, "invalid_token").await.unwrap_err();
    assert_eq!(
        (err.class(), err.code()),
        ("channel_fault", "invalid_token")
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
async fn an_answer_slower_than_the_total_timeout_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("ok", "text/html")
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let err = hook_with(&server, short_timeouts())
        .send(&message(None), &ctx())
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "timeout"));
}
