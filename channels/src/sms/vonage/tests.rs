use std::time::{Duration, SystemTime};

use wiremock::matchers::{body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::{BuildContext, Channel, DeliveryError, Message, Secret, SendContext, Timeouts};

fn config(base_url: &str) -> VonageConfig {
    VonageConfig {
        api_key: "abcd1234".into(),
        api_secret: Secret::new("s3cr3t"),
        from: "+15550001111".into(),
        callback: None,
        base_url: base_url.into(),
        max_segments: 10,
    }
}

fn ctx() -> BuildContext {
    BuildContext {
        channel: "sms-b".into(),
        timeouts: Timeouts::default(),
    }
}

fn message(body: &str) -> Message {
    Message {
        list_unsubscribe: None,
        id: "n-7".into(),
        channel: "sms-b".into(),
        to: "+447700900000".into(),
        subject: None,
        body: Some(body.into()),
        html: None,
        data: None,
        created_at: SystemTime::UNIX_EPOCH,
    }
}

fn send_ctx() -> SendContext {
    SendContext {
        attempt: 1,
        idempotency_key: "n-7".into(),
    }
}

/// Vonage's answer for one message with this status (the spec's examples).
fn answer(status: &str, error_text: &str) -> ResponseTemplate {
    let body = if status == "0" {
        r#"{"message-count":"1","messages":[{"to":"447700900000","message-id":"0A0000000123ABCD1","status":"0","remaining-balance":"3.14159265","message-price":"0.03330000","network":"12345","client-ref":"n-7"}]}"#.to_owned()
    } else {
        format!(
            r#"{{"message-count":"1","messages":[{{"status":"{status}","error-text":"{error_text}"}}]}}"#
        )
    };
    ResponseTemplate::new(200).set_body_raw(body, "application/json")
}

async fn send_to(resp: ResponseTemplate) -> Result<crate::Receipt, DeliveryError> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(resp)
        .mount(&server)
        .await;
    Vonage::new(&config(&server.uri()), &ctx())
        .unwrap()
        .send(&message("Hello"), &send_ctx())
        .await
}

#[tokio::test]
async fn posts_the_form_and_returns_the_message_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string("api_key=abcd1234&api_secret=s3cr3t&from=15550001111&to=447700900000&text=Hello&client-ref=n-7"))
        .respond_with(answer("0", ""))
        .expect(1)
        .mount(&server)
        .await;
    let r = Vonage::new(&config(&server.uri()), &ctx())
        .unwrap()
        .send(&message("Hello"), &send_ctx())
        .await
        .unwrap();
    assert_eq!(r.provider_id.as_deref(), Some("0A0000000123ABCD1"));
}

#[tokio::test]
async fn non_gsm_text_is_sent_as_unicode() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_string("api_key=abcd1234&api_secret=s3cr3t&from=15550001111&to=447700900000&text=%D0%9F%D1%80%D0%B8%D0%B2%D0%B5%D1%82&client-ref=n-7&type=unicode"))
        .respond_with(answer("0", ""))
        .expect(1)
        .mount(&server)
        .await;
    Vonage::new(&config(&server.uri()), &ctx())
        .unwrap()
        .send(&message("Привет"), &send_ctx())
        .await
        .unwrap();
}

#[tokio::test]
async fn status_1_throttled_is_rate_limited() {
    assert_eq!(
        send_to(answer("1", "Throughput Rate Exceeded"))
            .await
            .unwrap_err(),
        DeliveryError::RateLimited { retry_after: None }
    );
}

#[tokio::test]
async fn status_4_bad_credentials_is_a_channel_fault() {
    let err = send_to(answer("4", "Bad Credentials")).await.unwrap_err();
    assert_eq!(
        err,
        DeliveryError::channel_fault("vonage_4", "Bad Credentials")
    );
}

#[tokio::test]
async fn status_29_non_whitelisted_destination_is_a_channel_fault() {
    assert_eq!(
        send_to(answer("29", "Non White-listed Destination"))
            .await
            .unwrap_err()
            .class(),
        "channel_fault"
    );
}

#[tokio::test]
async fn status_7_barred_number_is_an_invalid_recipient() {
    let err = send_to(answer("7", "Number barred.")).await.unwrap_err();
    assert_eq!((err.class(), err.code()), ("invalid_recipient", "vonage_7"));
}

#[tokio::test]
async fn status_5_internal_error_is_transient() {
    assert_eq!(
        send_to(answer("5", "Internal Error"))
            .await
            .unwrap_err()
            .class(),
        "transient"
    );
}

#[tokio::test]
async fn status_2_missing_parameter_is_permanent() {
    let err = send_to(answer("2", "Missing to param")).await.unwrap_err();
    assert_eq!((err.class(), err.code()), ("permanent", "vonage_2"));
}

#[tokio::test]
async fn a_failed_part_of_a_long_message_fails_the_whole() {
    let body = r#"{"message-count":"2","messages":[{"to":"447700900000","message-id":"A1","status":"0"},{"status":"5","error-text":"Internal Error"}]}"#;
    let err = send_to(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "vonage_5");
}

#[tokio::test]
async fn an_html_error_page_and_an_empty_200_are_transient() {
    let err = send_to(ResponseTemplate::new(503).set_body_raw("<html>down</html>", "text/html"))
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "http_503"));
    let err = send_to(ResponseTemplate::new(200)).await.unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "bad_response"));
}

#[tokio::test]
async fn http_429_is_rate_limited_with_retry_after() {
    let err = send_to(ResponseTemplate::new(429).insert_header("retry-after", "2"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(2))
        }
    );
}

#[tokio::test]
async fn an_html_403_from_a_proxy_is_transient_not_permanent() {
    // The SMS API answers 200 even for refused messages: a 4xx came from something else.
    let err =
        send_to(ResponseTemplate::new(403).set_body_raw("<html>Forbidden</html>", "text/html"))
            .await
            .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "http_403"));
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
        .and(path("/sms/json"))
        .respond_with(answer("0", "").set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let err = Vonage::new(
        &config(&server.uri()),
        &BuildContext {
            channel: "sms-b".into(),
            timeouts: short_timeouts(),
        },
    )
    .unwrap()
    .send(&message("Hello"), &send_ctx())
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "timeout"));
}
