use std::time::{Duration, SystemTime};

use wiremock::matchers::{body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::{BuildContext, Channel, DeliveryError, Message, Secret, SendContext, Timeouts};

const SID: &str = "AC0123456789abcdef0123456789abcdef";

fn config(base_url: &str) -> TwilioConfig {
    TwilioConfig {
        account_sid: SID.into(),
        auth_token: Some(Secret::new("tw-token")),
        api_key_sid: None,
        api_key_secret: None,
        from: Some("+15550001111".into()),
        messaging_service_sid: None,
        status_callback: None,
        base_url: base_url.into(),
        max_segments: 10,
    }
}

fn ctx(total: Duration) -> BuildContext {
    BuildContext {
        channel: "sms".into(),
        timeouts: Timeouts {
            connect: Duration::from_secs(1),
            read: total,
            total,
        },
    }
}

fn message(to: &str, body: &str) -> Message {
    Message {
        list_unsubscribe: None,
        id: "n-1".into(),
        channel: "sms".into(),
        to: to.into(),
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
        idempotency_key: "n-1".into(),
    }
}

const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

/// Twilio's answer to a created message (trimmed from the API reference example).
const CREATED: &str = r#"{"account_sid":"AC0123456789abcdef0123456789abcdef","api_version":"2010-04-01","body":"Hello","date_created":"Thu, 24 Aug 2023 05:01:45 +0000","direction":"outbound-api","error_code":null,"error_message":null,"from":"+15550001111","num_segments":"1","price":null,"sid":"SM1f0e8ae6ade43cb3c0ce4525424e404f","status":"queued","to":"+15551234567","uri":"/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages/SM1f0e8ae6ade43cb3c0ce4525424e404f.json"}"#;

fn twilio_error(code: u32, status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        format!(
            r#"{{"code": {code}, "message": "{message}", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {status}}}"#
        ),
        "application/json",
    )
}

async fn send_to(
    server: &MockServer,
    resp: ResponseTemplate,
) -> Result<crate::Receipt, DeliveryError> {
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(resp)
        .mount(server)
        .await;
    Twilio::new(&config(&server.uri()), &ctx(Duration::from_secs(5)))
        .unwrap()
        .send(&message("+15551234567", "Hello"), &send_ctx())
        .await
}

#[tokio::test]
async fn posts_the_form_with_basic_auth_and_returns_the_message_sid() {
    let server = MockServer::start().await;
    // base64("AC0123456789abcdef0123456789abcdef:tw-token")
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(header(
            "authorization",
            "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0dy10b2tlbg==",
        ))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "To=%2B15551234567&From=%2B15550001111&Body=Hello+there+%E2%82%AC",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_raw(CREATED, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let receipt = Twilio::new(&config(&server.uri()), &ctx(Duration::from_secs(5)))
        .unwrap()
        .send(&message("+15551234567", "Hello there €"), &send_ctx())
        .await
        .unwrap();
    assert_eq!(
        receipt.provider_id.as_deref(),
        Some("SM1f0e8ae6ade43cb3c0ce4525424e404f")
    );
}

#[tokio::test]
async fn an_api_key_and_a_messaging_service_and_status_callback_are_sent_as_configured() {
    let server = MockServer::start().await;
    // base64("SK0123:key-secret")
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(header("authorization", "Basic U0swMTIzOmtleS1zZWNyZXQ="))
        .and(body_string(
            "To=%2B15551234567&MessagingServiceSid=MG01&Body=Hi&StatusCallback=https%3A%2F%2Fn.example%2Fv1%2Finbound%2Fsms",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_raw(CREATED, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let cfg = TwilioConfig {
        auth_token: None,
        api_key_sid: Some("SK0123".into()),
        api_key_secret: Some(Secret::new("key-secret")),
        from: None,
        messaging_service_sid: Some("MG01".into()),
        status_callback: Some("https://n.example/v1/inbound/sms".into()),
        ..config(&server.uri())
    };
    Twilio::new(&cfg, &ctx(Duration::from_secs(5)))
        .unwrap()
        .send(&message("+15551234567", "Hi"), &send_ctx())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_invalid_number_is_an_invalid_recipient_with_twilios_code() {
    let err = send_to(
        &MockServer::start().await,
        twilio_error(
            21211,
            400,
            "The 'To' number +15551234567 is not a valid phone number.",
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::invalid_recipient(
            "21211",
            "The 'To' number +15551234567 is not a valid phone number."
        )
    );
}

#[tokio::test]
async fn an_unsubscribed_recipient_is_an_invalid_recipient() {
    let err = send_to(
        &MockServer::start().await,
        twilio_error(21610, 400, "Attempt to send to unsubscribed recipient"),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("invalid_recipient", "21610"));
}

#[tokio::test]
async fn a_number_that_cannot_receive_sms_is_an_invalid_recipient() {
    let err = send_to(
        &MockServer::start().await,
        twilio_error(21614, 400, "'To' number is not a valid mobile number"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::invalid_recipient("21614", "'To' number is not a valid mobile number")
    );
}

#[tokio::test]
async fn refused_credentials_are_a_channel_fault() {
    let err = send_to(
        &MockServer::start().await,
        twilio_error(20003, 401, "Authenticate"),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("channel_fault", "20003"));
}

#[tokio::test]
async fn a_from_number_that_cannot_send_sms_is_a_channel_fault() {
    let err = send_to(
        &MockServer::start().await,
        twilio_error(
            21606,
            400,
            "The From phone number is not a valid, SMS-capable inbound phone number",
        ),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("channel_fault", "21606"));
}

#[tokio::test]
async fn too_many_requests_is_rate_limited_with_retry_after() {
    let err = send_to(
        &MockServer::start().await,
        twilio_error(20429, 429, "Too Many Requests").insert_header("retry-after", "4"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(4))
        }
    );
}

#[tokio::test]
async fn an_html_502_page_is_transient() {
    let err = send_to(
        &MockServer::start().await,
        ResponseTemplate::new(502).set_body_raw(
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            "text/html",
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), "transient");
    assert_eq!(err.code(), "http_502");
}

#[tokio::test]
async fn a_created_answer_with_truncated_json_is_transient_not_a_panic() {
    let err = send_to(
        &MockServer::start().await,
        ResponseTemplate::new(201).set_body_raw(r#"{"sid":"SM1f0e"#, "application/json"),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "bad_response"));
}

#[tokio::test]
async fn an_unknown_client_error_is_permanent_with_its_code() {
    let err = send_to(
        &MockServer::start().await,
        twilio_error(
            21617,
            400,
            "The concatenated message body exceeds the 1600 character limit",
        ),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("permanent", "21617"));
}

#[tokio::test]
async fn a_timeout_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let err = Twilio::new(&config(&server.uri()), &ctx(Duration::from_millis(200)))
        .unwrap()
        .send(&message("+15551234567", "Hello"), &send_ctx())
        .await
        .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "timeout"));
}

#[test]
fn validate_wants_e164_and_a_body_within_the_segment_limit() {
    let t = Twilio::new(
        &TwilioConfig {
            max_segments: 2,
            ..config("http://127.0.0.1:1")
        },
        &ctx(Duration::from_secs(1)),
    )
    .unwrap();
    assert_eq!(
        t.validate(&message("5551234567", "x")).unwrap_err().field,
        "to"
    );
    assert_eq!(
        t.validate(&message("+15551234567", "")).unwrap_err().code,
        "missing_content"
    );
    assert_eq!(
        t.validate(&message("+15551234567", &"a".repeat(307)))
            .unwrap_err()
            .code,
        "too_long"
    );
    assert!(
        t.validate(&message("+15551234567", &"a".repeat(306)))
            .is_ok()
    );
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let bad_sid = TwilioConfig {
        account_sid: "AC123".into(),
        ..config("http://x")
    };
    assert_eq!(
        Twilio::new(&bad_sid, &ctx(Duration::from_secs(1)))
            .unwrap_err()
            .to_string(),
        "`account_sid`: must be AC followed by 32 hex digits"
    );
    let two_senders = TwilioConfig {
        messaging_service_sid: Some("MG1".into()),
        ..config("http://x")
    };
    assert!(
        Twilio::new(&two_senders, &ctx(Duration::from_secs(1)))
            .unwrap_err()
            .to_string()
            .starts_with("`from`")
    );
    let no_credentials = TwilioConfig {
        auth_token: None,
        ..config("http://x")
    };
    assert!(
        Twilio::new(&no_credentials, &ctx(Duration::from_secs(1)))
            .unwrap_err()
            .to_string()
            .starts_with("`auth_token`")
    );
}

#[tokio::test]
async fn an_html_403_from_a_proxy_is_transient_not_a_channel_fault() {
    let err = send_to(
        &MockServer::start().await,
        ResponseTemplate::new(403).set_body_raw(
            "<html><body><h1>403 Forbidden</h1>Request blocked.</body></html>",
            "text/html",
        ),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "http_403"));
}

#[tokio::test]
async fn an_html_404_from_a_misrouted_base_url_is_transient() {
    let err = send_to(
        &MockServer::start().await,
        ResponseTemplate::new(404).set_body_raw("<html>Not Found</html>", "text/html"),
    )
    .await
    .unwrap_err();
    assert_eq!((err.class(), err.code()), ("transient", "http_404"));
}

#[tokio::test]
async fn an_html_429_is_still_rate_limited() {
    let err = send_to(
        &MockServer::start().await,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "4")
            .set_body_raw("<html>slow down</html>", "text/html"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        DeliveryError::RateLimited {
            retry_after: Some(Duration::from_secs(4))
        }
    );
}
