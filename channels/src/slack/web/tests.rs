use std::time::{Duration, SystemTime};

use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::{BuildContext, Channel, DeliveryError, Message, Secret, SendContext, Timeouts};

fn slack(server: &MockServer, total: Duration) -> Slack {
    let cfg = SlackConfig {
        token: Secret::new("xoxb-1234-5678-abcd"),
        base_url: server.uri(),
    };
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        read: total,
        total,
    };
    Slack::new(
        &cfg,
        &BuildContext {
            channel: "slack".into(),
            timeouts,
        },
    )
    .unwrap()
}

fn message(to: &str) -> Message {
    Message {
        list_unsubscribe: None,
        id: "n-1".into(),
        channel: "slack".into(),
        to: to.into(),
        subject: None,
        body: Some("Deploy finished".into()),
        html: None,
        data: Some(serde_json::json!({"thread_ts": "1503435956.000247"})),
        created_at: SystemTime::UNIX_EPOCH,
    }
}

fn ctx() -> SendContext {
    SendContext {
        attempt: 1,
        idempotency_key: "n-1".into(),
    }
}

async fn answered(resp: ResponseTemplate) -> Result<crate::Receipt, DeliveryError> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .respond_with(resp)
        .mount(&server)
        .await;
    slack(&server, Duration::from_secs(5))
        .send(&message("C0123456789"), &ctx())
        .await
}

fn slack_error(error: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        format!(r#"{{"ok":false,"error":"{error}","warning":"missing_charset","response_metadata":{{"warnings":["missing_charset"]}}}}"#),
        "application/json; charset=utf-8",
    )
}

#[tokio::test]
async fn posts_json_with_the_bearer_token_and_returns_channel_and_ts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header("authorization", "Bearer xoxb-1234-5678-abcd"))
        .and(header("content-type", "application/json; charset=utf-8"))
        .and(body_json(serde_json::json!({
            "channel": "C0123456789",
            "text": "Deploy finished",
            "thread_ts": "1503435956.000247"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"ok":true,"channel":"C0123456789","ts":"1503435957.000300","message":{"text":"Deploy finished","type":"message","subtype":"bot_message","ts":"1503435957.000300"}}"#,
            "application/json; charset=utf-8",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let r = slack(&server, Duration::from_secs(5))
        .send(&message("C0123456789"), &ctx())
        .await
        .unwrap();
    assert_eq!(
        r.provider_id.as_deref(),
        Some("C0123456789:1503435957.000300")
    );
}

#[tokio::test]
async fn ok_false_invalid_auth_is_a_channel_fault() {
    assert_eq!(
        answered(slack_error("invalid_auth")).await.unwrap_err(),
        DeliveryError::channel_fault("invalid_auth", "chat.postMessage: invalid_auth")
    );
    assert_eq!(
        answered(slack_error("token_revoked"))
            .await
            .unwrap_err()
            .class(),
        "channel_fault"
    );
}

#[tokio::test]
async fn ok_false_channel_not_found_is_an_invalid_recipient() {
    let err = answered(slack_error("channel_not_found"))
        .await
        .unwrap_err();
    assert_eq!(
        (err.class(), err.code()),
        ("invalid_recipient", "channel_not_found")
    );
    assert_eq!(
        answered(slack_error("not_in_channel"))
            .await
            .unwrap_err()
            .class(),
        "invalid_recipient"
    );
}

#[tokio::test]
async fn ok_false_msg_too_long_is_permanent() {
    assert_eq!(
        answered(slack_error("msg_too_long"))
            .await
            .unwrap_err()
            .class(),
        "permanent"
    );
}

#[tokio::test]
async fn rate_limits_are_honoured_whether_429_or_ok_false() {
    let err = answered(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert_eq!(
        answered(slack_error("ratelimited"))
            .await
            .unwrap_err()
            .class(),
        "rate_limited"
    );
}

#[tokio::test]
async fn internal_errors_html_and_truncated_json_are_transient() {
    assert_eq!(
        answered(slack_error("internal_error"))
            .await
            .unwrap_err()
            .class(),
        "transient"
    );
    let err = answered(ResponseTemplate::new(503).set_body_raw("<html>503</html>", "text/html"))
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "http_503"));
    let err = answered(ResponseTemplate::new(200).set_body_raw(r#"{"ok":tr"#, "application/json"))
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "bad_response"));
}

#[tokio::test]
async fn a_timeout_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let err = slack(&server, Duration::from_millis(200))
        .send(&message("C1"), &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "timeout");
}

#[test]
fn a_token_of_the_wrong_kind_is_refused_at_build() {
    let cfg = SlackConfig {
        token: Secret::new("abc"),
        base_url: "https://slack.com".into(),
    };
    let err = Slack::new(
        &cfg,
        &BuildContext {
            channel: "s".into(),
            timeouts: Timeouts::default(),
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`token`: must be a bot (xoxb-) or user (xoxp-) token"
    );
}

#[test]
fn validate_needs_a_channel_and_content_and_array_blocks() {
    let cfg = SlackConfig {
        token: Secret::new("xoxb-1"),
        base_url: "https://slack.com".into(),
    };
    let s = Slack::new(
        &cfg,
        &BuildContext {
            channel: "s".into(),
            timeouts: Timeouts::default(),
        },
    )
    .unwrap();
    assert_eq!(s.validate(&message("")).unwrap_err().field, "to");
    let empty = Message {
        list_unsubscribe: None,
        body: None,
        data: None,
        ..message("C1")
    };
    assert_eq!(s.validate(&empty).unwrap_err().code, "missing_content");
    let bad_blocks = Message {
        list_unsubscribe: None,
        data: Some(serde_json::json!({"blocks": "nope"})),
        ..message("C1")
    };
    assert_eq!(s.validate(&bad_blocks).unwrap_err().field, "data");
    let long = Message {
        list_unsubscribe: None,
        body: Some("x".repeat(40_001)),
        ..message("C1")
    };
    assert_eq!(s.validate(&long).unwrap_err().code, "too_long");
}

#[tokio::test]
async fn an_html_404_from_a_misrouted_base_url_is_transient() {
    let err =
        answered(ResponseTemplate::new(404).set_body_raw("<html>Not Found</html>", "text/html"))
            .await
            .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "http_404"));
}

#[tokio::test]
async fn an_ok_false_answer_on_a_4xx_is_mapped_by_its_error() {
    let err = answered(
        ResponseTemplate::new(400)
            .set_body_json(serde_json::json!({"ok": false, "error": "invalid_auth"})),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("channel_fault", "invalid_auth"));
}
