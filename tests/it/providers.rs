//! Each provider kind through the running daemon to a mock that answers as the provider does:
//! the notification ends `delivered` with the provider's id visible.

use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

const SID: &str = "AC0123456789abcdef0123456789abcdef";

fn twilio_channel(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[channels.{name}]\nkind = \"twilio\"\naccount_sid = \"{SID}\"\nauth_token = \"tw-token\"\n\
         from = \"+15550001111\"\nbase_url = \"{base_url}\"\n{extra}\n"
    )
}

fn vonage_channel(name: &str, base_url: &str) -> String {
    format!(
        "[channels.{name}]\nkind = \"vonage\"\napi_key = \"abcd1234\"\napi_secret = \"s3cr3t\"\n\
         from = \"15550001111\"\nbase_url = \"{base_url}\"\n"
    )
}

async fn twilio_mock(status: u16, body: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{SID}/Messages.json")))
        .and(header(
            "authorization",
            "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0dy10b2tlbg==",
        ))
        .respond_with(
            ResponseTemplate::new(status).set_body_raw(body.to_owned(), "application/json"),
        )
        .mount(&server)
        .await;
    server
}

async fn vonage_mock() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"message-count":"1","messages":[{"to":"15551234567","message-id":"0A00000001","status":"0"}]}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn twilio_delivers_and_the_message_sid_is_the_provider_id() {
    let twilio = twilio_mock(
        201,
        r#"{"sid":"SM1f0e8ae6ade43cb3c0ce4525424e404f","status":"queued"}"#,
    )
    .await;
    let d = TestDaemon::start(&twilio_channel("sms", &twilio.uri(), "")).await;
    let id = d
        .accept(json!({"channel": "sms", "to": "+15551234567", "body": "Your code is 123456"}))
        .await;
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(view["provider_id"], "SM1f0e8ae6ade43cb3c0ce4525424e404f");
}

#[tokio::test]
async fn vonage_delivers_and_the_message_id_is_the_provider_id() {
    let vonage = vonage_mock().await;
    let d = TestDaemon::start(&vonage_channel("sms", &vonage.uri())).await;
    let id = d
        .accept(json!({"channel": "sms", "to": "+15551234567", "body": "hi"}))
        .await;
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(view["provider_id"], "0A00000001");
}

#[tokio::test]
async fn an_sms_to_a_number_that_is_not_e164_is_422_before_it_is_queued() {
    let twilio = twilio_mock(201, "{}").await;
    let d = TestDaemon::start(&twilio_channel("sms", &twilio.uri(), "")).await;
    let (s, b) = d
        .post(
            "/v1/notifications",
            &json!({"channel": "sms", "to": "555-1234", "body": "hi"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].clone(), b["error"]["code"].clone()),
        (422, json!("to"), json!("invalid_recipient"))
    );
    assert!(twilio.received_requests().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_outage_fails_over_to_vonage() {
    let twilio = twilio_mock(
        503,
        r#"{"code": 20500, "message": "Internal Server Error", "status": 503}"#,
    )
    .await;
    let vonage = vonage_mock().await;
    let channels = format!(
        "{}{}",
        twilio_channel(
            "sms-twilio",
            &twilio.uri(),
            "failover = [\"sms-vonage\"]\nretry = { max_attempts = 2, base = \"20ms\", max = \"50ms\" }"
        ),
        vonage_channel("sms-vonage", &vonage.uri()),
    );
    let d = TestDaemon::start(&channels).await;
    let id = d
        .accept(json!({"channel": "sms-twilio", "to": "+15551234567", "body": "hi"}))
        .await;
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(view["channel"], "sms-vonage");
    assert_eq!(view["provider_id"], "0A00000001");
    assert_eq!(view["attempt_log"][0]["channel"], "sms-twilio");
    assert_eq!(view["attempt_log"][0]["code"], "20500");
}

#[tokio::test]
async fn a_twilio_unsubscribed_recipient_fails_with_its_code_and_does_not_fail_over() {
    let twilio = twilio_mock(400, r#"{"code": 21610, "message": "Attempt to send to unsubscribed recipient", "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400}"#).await;
    let vonage = vonage_mock().await;
    let channels = format!(
        "{}{}",
        twilio_channel("sms-twilio", &twilio.uri(), "failover = [\"sms-vonage\"]"),
        vonage_channel("sms-vonage", &vonage.uri()),
    );
    let d = TestDaemon::start(&channels).await;
    let id = d
        .accept(json!({"channel": "sms-twilio", "to": "+15551234567", "body": "hi"}))
        .await;
    let view = d.wait_for_state(&id, "failed").await;
    assert_eq!(
        view["last_error"]["code"], "21610",
        "the app can prune this number"
    );
    assert!(vonage.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn slack_chat_post_message_delivers_with_channel_and_ts() {
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header("authorization", "Bearer xoxb-test-token"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"ok":true,"channel":"C0123456789","ts":"1700000000.000100"}"#,
            "application/json",
        ))
        .mount(&slack)
        .await;
    let d = TestDaemon::start(&format!(
        "[channels.slack]\nkind = \"slack\"\ntoken = \"xoxb-test-token\"\nbase_url = \"{}\"\n",
        slack.uri()
    ))
    .await;
    let id = d
        .accept(json!({"channel": "slack", "to": "C0123456789", "body": "Deploy finished"}))
        .await;
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(view["provider_id"], "C0123456789:1700000000.000100");
}

#[tokio::test]
async fn a_slack_incoming_webhook_delivers() {
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/T000/B000/XXXX"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("ok", "text/html"))
        .expect(1)
        .mount(&slack)
        .await;
    let d = TestDaemon::start(&format!(
        "[channels.ops]\nkind = \"slack_webhook\"\nurl = \"{}/services/T000/B000/XXXX\"\n",
        slack.uri()
    ))
    .await;
    let id = d
        .accept(json!({"channel": "ops", "to": "#ops", "subject": "Disk", "body": "full"}))
        .await;
    d.wait_for_state(&id, "delivered").await;
}

#[tokio::test]
async fn smtp_delivers_to_a_real_smtp_server_and_the_message_id_is_the_provider_id() {
    use notifyd_channels::email::smtp::test_server::{Behaviour, SmtpServer};
    let server = SmtpServer::start(Behaviour::Accept).await.unwrap();
    let d = TestDaemon::start(&format!(
        "[channels.mail]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"orders@shop.example\"\n",
        server.port
    ))
    .await;
    let id = d
        .accept(json!({"channel": "mail", "to": "alice@example.com", "subject": "Shipped", "body": "On its way.", "html": "<p>On its way.</p>"}))
        .await;
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(view["provider_id"], format!("<{id}@shop.example>"));
    let mail = &server.received()[0];
    assert_eq!(mail.rcpt_to, vec!["<alice@example.com>"]);
    assert!(mail.data.contains("multipart/alternative"));
}

#[tokio::test]
async fn fcm_delivers_with_a_cached_oauth_token_and_the_message_name() {
    let google = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "ya29.t", "expires_in": 3599, "token_type": "Bearer"}),
        ))
        .expect(1)
        .mount(&google)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/projects/demo-project/messages:send"))
        .and(header("authorization", "Bearer ya29.t"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "projects/demo-project/messages/0:42"})),
        )
        .mount(&google)
        .await;
    let account = tempfile::NamedTempFile::new().unwrap();
    let key = include_str!("../../channels/src/push/fcm/testdata/test-only-rsa-key.pem");
    std::fs::write(
        account.path(),
        json!({"type": "service_account", "project_id": "demo-project", "private_key_id": "k1", "private_key": key,
               "client_email": "n@demo-project.iam.gserviceaccount.com", "token_uri": format!("{}/token", google.uri())})
        .to_string(),
    )
    .unwrap();
    let d = TestDaemon::start(&format!(
        "[channels.android]\nkind = \"fcm\"\nservice_account_file = \"{}\"\nbase_url = \"{}\"\n",
        account.path().display(),
        google.uri()
    ))
    .await;
    let a = d.accept(json!({"channel": "android", "to": "fYRW3:APA91bHun4Mx", "subject": "Hi", "body": "there"})).await;
    let b = d
        .accept(json!({"channel": "android", "to": "fYRW3:APA91bHun4Mx", "body": "again"}))
        .await;
    assert_eq!(
        d.wait_for_state(&a, "delivered").await["provider_id"],
        "projects/demo-project/messages/0:42"
    );
    d.wait_for_state(&b, "delivered").await;
}

#[tokio::test]
async fn apns_delivers_over_http2_and_the_apns_id_is_the_provider_id() {
    use axum::http::{HeaderMap, StatusCode, Version};
    let app = axum::Router::new().route(
        "/3/device/{token}",
        axum::routing::post(|version: Version, headers: HeaderMap| async move {
            assert_eq!(version, Version::HTTP_2);
            assert!(
                headers["authorization"]
                    .to_str()
                    .unwrap()
                    .starts_with("bearer ")
            );
            assert_eq!(headers["apns-topic"], "com.example.app");
            let id = headers["apns-id"].to_str().unwrap().to_owned();
            (StatusCode::OK, [("apns-id", id)])
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let apple = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        key.path(),
        include_str!("../../channels/src/push/apns/testdata/test-only-AuthKey.p8"),
    )
    .unwrap();
    let d = TestDaemon::start(&format!(
        "[channels.ios]\nkind = \"apns\"\nkey_file = \"{}\"\nkey_id = \"ABC123DEFG\"\nteam_id = \"DEF123GHIJ\"\n\
         topic = \"com.example.app\"\nbase_url = \"{apple}\"\n",
        key.path().display()
    ))
    .await;
    let device = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad";
    let id = d
        .accept(json!({"channel": "ios", "to": device, "subject": "Hi", "body": "there"}))
        .await;
    let view = d.wait_for_state(&id, "delivered").await;
    // APNs echoes our apns-id: the notification id as a canonical (lowercase) UUID.
    assert_eq!(view["provider_id"], id.to_ascii_lowercase());
}

#[tokio::test]
async fn web_push_delivers_an_encrypted_payload_to_the_subscription_endpoint() {
    let push_service = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/wpush/v2/abc"))
        .and(header("content-encoding", "aes128gcm"))
        .respond_with(
            ResponseTemplate::new(201).insert_header("location", "https://push.example/m/7"),
        )
        .mount(&push_service)
        .await;
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        key.path(),
        include_str!("../../channels/src/push/webpush/testdata/test-only-vapid-key.pem"),
    )
    .unwrap();
    let d = TestDaemon::start(&format!(
        "[channels.web]\nkind = \"webpush\"\nvapid_private_key_file = \"{}\"\nsubject = \"mailto:ops@example.com\"\n",
        key.path().display()
    ))
    .await;
    // A subscription as a browser's PushManager gives it (the key is a valid P-256 point).
    let subscription = json!({
        "endpoint": format!("{}/wpush/v2/abc", push_service.uri()),
        "keys": {
            "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "auth": "BTBZMqHH6r4Tts7J_aSIgg"
        }
    });
    let id = d.accept(json!({"channel": "web", "to": subscription.to_string(), "subject": "Hi", "body": "there"})).await;
    let view = d.wait_for_state(&id, "delivered").await;
    assert_eq!(view["provider_id"], "https://push.example/m/7");
}
